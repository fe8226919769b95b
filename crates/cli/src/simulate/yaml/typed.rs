//! Pod documents read from libyaml's events straight into `Pod`, without the JSON value the
//! other kinds go through.
//!
//! Pods are nearly all of a big input (20 000 of the 20 001 documents of upstream's benchmark
//! shape). Building each one's `serde_json::Value` and typing it afterwards took ~0.4 of the
//! ~1.3 CPU seconds `simulate` spent at that size, and the values were most of the run's page
//! faults. A document that says `apiVersion: v1` and `kind: Pod` before its other fields (as
//! every writer of manifests orders them) is handed to
//! `Pod`'s own deserializer through [`StrictDe`], which applies exactly the checks of the
//! JSON-value fast path ([`super::StrictVisitor`]) and presents every value the way a
//! `serde_json::Value` would (numbers ≥ 0 as `u64`, null as unit, options by nullness,
//! newtypes transparently), so the `Pod` equals the one typed from the value. Any refusal or
//! type error makes the caller read the stream from that document on with serde-saphyr, as
//! for every other refusal: the message then comes from the reference path, with its field
//! path.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Pod;
use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

use super::{MAX_DEPTH, StrictKey, StrictVisitor, yaml11_scalar};

/// One document of a stream: a Pod typed on the way, or anything else as a JSON value.
#[derive(Debug)]
pub enum Document {
    /// A `v1` Pod (boxed: a `Pod` is ~2 KB before any of its content).
    Pod(Box<Pod>),
    /// Any other document (`Null` for an empty one).
    Value(Value),
}

/// A whole document: a mapping that says `apiVersion: v1` and `kind: Pod` before a field of
/// the Pod becomes a [`Document::Pod`]; any other is read as [`StrictVisitor`] reads it.
struct Top;

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Top)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    // Scalars and sequences are not objects: the reference path reads them and the manifest
    // reader reports them. Only empty documents are accepted here, to be skipped.
    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Value(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Document, E> {
        Ok(Document::Value(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut object = Map::new();
        let mut keys = Keys::default();
        while let Some(StrictKey(key)) = map.next_key()? {
            if key == "<<" {
                return Err(de::Error::custom("merge key"));
            }
            keys.insert(&key)?;
            if key != "apiVersion" && key != "kind" && is_v1_pod(&object) {
                let first = Some(key);
                let rest = StrictMap {
                    map,
                    depth: 1,
                    keys,
                };
                let replay = Replay {
                    object,
                    first,
                    rest,
                };
                return Pod::deserialize(MapAccessDeserializer::new(replay))
                    .map(|pod| Document::Pod(Box::new(pod)));
            }
            let value = map.next_value_seed(StrictVisitor { depth: 1 })?;
            object.insert(key, value);
        }
        Ok(Document::Value(Value::Object(object)))
    }
}

fn is_v1_pod(object: &Map<String, Value>) -> bool {
    object.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && object.get("kind").and_then(Value::as_str) == Some("Pod")
}

/// The keys of one mapping so far, to refuse a duplicate as [`StrictVisitor`] does. Hashes,
/// not strings: no key is copied, and a collision only sends the document to the reference
/// path, which reads it correctly. A short list while the mapping is small (most of a Pod's
/// are), a set beyond that, so a mapping of thousands of keys is not checked in square time.
#[derive(Default)]
struct Keys {
    few: Vec<u64>,
    many: HashSet<u64>,
}

/// Keys kept in the list before they move to the set.
const FEW_KEYS: usize = 16;

impl Keys {
    fn insert<E: de::Error>(&mut self, key: &str) -> Result<(), E> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let h = h.finish();
        let new = if self.many.is_empty() && self.few.len() < FEW_KEYS {
            let new = !self.few.contains(&h);
            self.few.push(h);
            new
        } else {
            self.many.extend(self.few.drain(..));
            self.many.insert(h)
        };
        if !new {
            return Err(E::custom("duplicate key"));
        }
        Ok(())
    }
}

/// The Pod's mapping for its deserializer: the entries the top level already read as values
/// (its `apiVersion` and `kind`, and whatever came before them), then the key that told it
/// apart, then the rest of the mapping.
struct Replay<A> {
    object: Map<String, Value>,
    first: Option<String>,
    rest: StrictMap<A>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some(key) = self.object.keys().next().cloned() {
            return seed.deserialize(StringDeserializer::new(key)).map(Some);
        }
        if let Some(key) = self.first.take() {
            return seed.deserialize(StringDeserializer::new(key)).map(Some);
        }
        self.rest.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        if let Some(key) = self.object.keys().next().cloned()
            && let Some(value) = self.object.remove(&key)
        {
            // A value the JSON path would have typed the same way.
            return seed
                .deserialize(value)
                .map_err(|e| de::Error::custom(e.to_string()));
        }
        self.rest.map.next_value_seed(Strict {
            seed,
            depth: self.rest.depth,
        })
    }
}

/// A value deserializer that refuses what [`StrictVisitor`] refuses and otherwise behaves
/// like a `serde_json::Value` holding what [`StrictVisitor`] would have built.
struct StrictDe<D> {
    inner: D,
    depth: usize,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StrictDe<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(Forward {
            visitor,
            depth: self.depth,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // libyaml's reader calls null what the JSON value path does (plain `~`, `null`,
        // empty; tags are refused below), so `None` and `Some` fall alike.
        self.inner.deserialize_option(ForwardOption {
            visitor,
            depth: self.depth,
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, D::Error> {
        // Pods hold no enums; leave anything that would to the reference path.
        Err(de::Error::custom("an enum"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // An unknown field is still read strictly: serde-saphyr would refuse a duplicate key
        // in it, or budget its aliases, whether the Pod reads it or not.
        self.inner
            .deserialize_any(StrictVisitor { depth: self.depth })?;
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// [`StrictDe`] for the values of a mapping or sequence.
struct Strict<S> {
    seed: S,
    depth: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Strict<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(StrictDe {
            inner: deserializer,
            depth: self.depth,
        })
    }
}

/// Hands what libyaml read to the target's visitor, checked and shaped as a JSON value.
struct Forward<V> {
    visitor: V,
    depth: usize,
}

impl<V> Forward<V> {
    fn nested<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        Ok(self.depth + 1)
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Forward<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.visitor.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        // A JSON number ≥ 0 is a `u64` to its readers.
        match u64::try_from(v) {
            Ok(u) => self.visitor.visit_u64(u),
            Err(_) => self.visitor.visit_i64(v),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.visitor.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        if !v.is_finite() {
            return Err(E::custom("not a finite number"));
        }
        self.visitor.visit_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        if yaml11_scalar(v) {
            return Err(E::custom("a YAML 1.1 scalar"));
        }
        self.visitor.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        if yaml11_scalar(&v) {
            return Err(E::custom("a YAML 1.1 scalar"));
        }
        self.visitor.visit_string(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = self.nested()?;
        self.visitor.visit_seq(StrictSeq { seq, depth })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = self.nested()?;
        self.visitor.visit_map(StrictMap {
            map,
            depth,
            keys: Keys::default(),
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _data: A) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("a tagged value"))
    }
}

/// `deserialize_option`'s answer, passed on: `Some` goes on strictly.
struct ForwardOption<V> {
    visitor: V,
    depth: usize,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ForwardOption<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(StrictDe {
            inner: d,
            depth: self.depth,
        })
    }
}

/// A sequence whose elements are read through [`StrictDe`].
struct StrictSeq<A> {
    seq: A,
    depth: usize,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.seq.next_element_seed(Strict {
            seed,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// A mapping whose keys are plain strings, neither merge keys nor repeated, and whose values
/// are read through [`StrictDe`].
struct StrictMap<A> {
    map: A,
    depth: usize,
    keys: Keys,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(StrictKey(key)) = self.map.next_key()? else {
            return Ok(None);
        };
        if key == "<<" {
            return Err(de::Error::custom("merge key"));
        }
        self.keys.insert(&key)?;
        seed.deserialize(StringDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(Strict {
            seed,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}
