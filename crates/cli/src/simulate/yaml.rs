//! The documents of a manifest stream as JSON values, at libyaml's speed with serde-saphyr's
//! semantics and messages.
//!
//! serde-saphyr (the project's YAML reader everywhere else) reads ~5 MB/s into
//! `serde_json::Value`: 1.2 of the 2 CPU seconds `simulate` spends on 20 000 pods. `yaml_serde`
//! (libyaml translated to Rust, kept by the YAML organisation) reads the same text ~4x faster.
//! It is the fast path only: [`StrictVisitor`] refuses everything where the two readers could disagree
//! (duplicate keys, merge keys, tags, keys that are not plain strings, deep nesting, scalars a
//! YAML 1.1 reader takes for bools or numbers), a stream with aliases skips it, and on the first
//! document the fast path refuses or fails to parse, serde-saphyr reads the stream again from
//! that document on. So what is accepted, the values produced, and every error message are
//! serde-saphyr's; `tests` checks the fast path against serde-saphyr on the repository's own
//! manifests and on the corner cases of YAML's core schema.

use std::fmt;

mod typed;

use karpenter_api::read::yaml_documents;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

pub use typed::Document;

/// Calls `add` with the index and content of every non-empty document of `text` in order
/// (empty and `null` documents are skipped and not counted, as in [`yaml_documents`]): a `v1`
/// Pod typed already when its `apiVersion` and `kind` come before another of its fields
/// ([`typed`]), any other document as a JSON value. Stops at the first error: `add`'s, or serde-saphyr's message,
/// through `yaml_error`, for the first document that is not valid YAML.
pub fn for_each_document<E>(
    text: &str,
    yaml_error: impl Fn(String) -> E,
    mut add: impl FnMut(usize, Document) -> Result<(), E>,
) -> Result<(), E> {
    if may_have_aliases(text) {
        // serde-saphyr budgets aliases (counts, alias/anchor ratio) where libyaml only caps
        // their expansion: a stream with aliases is read by the reference alone.
        return reference(text, 0, yaml_error, add);
    }
    let mut read = 0;
    // yaml_serde reports a syntax error as a document that fails to deserialize, so a loop
    // that runs out of documents has read the whole stream.
    for document in yaml_serde::Deserializer::from_str(text) {
        match Document::deserialize(document) {
            Ok(Document::Value(Value::Null)) => {}
            Ok(document) => {
                add(read, document)?;
                read += 1;
            }
            Err(_) => return reference(text, read, yaml_error, add),
        }
    }
    Ok(())
}

/// Whether `text` may hold a YAML alias: `*` after a space, a line start or a flow indicator,
/// then a name character. A false positive only costs speed; cron schedules (`"0 * * * *"`)
/// and quoted globs do not match. (An alias named with other characters is read by the fast
/// path, which caps alias expansion too, only not with serde-saphyr's counts.)
fn may_have_aliases(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'*'
            && (i == 0
                || matches!(
                    bytes[i - 1],
                    b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b','
                ))
            && bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    })
}

/// serde-saphyr from the `skip`-th non-empty document on. It reads the stream from its start
/// again, which only happens when the fast path gave up (valid Kubernetes manifests never make
/// it).
fn reference<E>(
    text: &str,
    skip: usize,
    yaml_error: impl Fn(String) -> E,
    mut add: impl FnMut(usize, Document) -> Result<(), E>,
) -> Result<(), E> {
    let mut bytes = text.as_bytes();
    let values = yaml_documents::<_, Value>(&mut bytes)
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .enumerate()
        .skip(skip);
    for (index, value) in values {
        let value = value.map_err(|e| yaml_error(e.to_string()))?;
        add(index, Document::Value(value))?;
    }
    Ok(())
}

/// Collections nested deeper than this are left to serde-saphyr, whose own limit (64, counting
/// the document's top collection) refuses them; real manifests nest about 15 deep.
const MAX_DEPTH: usize = 48;

/// Reads one value `depth` collections down, refusing what serde-saphyr would read
/// differently.
struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn nested<E: de::Error>(&self) -> Result<StrictVisitor, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        Ok(StrictVisitor {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictVisitor {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an untagged YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no infinity or NaN: leave `.inf`/`.nan` to the reference reader.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        if yaml11_scalar(&v) {
            return Err(E::custom("a YAML 1.1 scalar"));
        }
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(StrictKey(key)) = map.next_key()? {
            if key == "<<" {
                return Err(de::Error::custom("merge key"));
            }
            let value = map.next_value_seed(self.nested()?)?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(object))
    }

    // Tagged values (`!foo x`) arrive as enums: refused.
}

/// Whether a string could be a plain scalar that serde-saphyr reads the YAML 1.1 way (a bool
/// such as `yes`/`off`, a number such as `017` or `1_000`) where libyaml's reader keeps a
/// string. Quoted or not cannot be told apart here, so quoted ones are refused as well; they
/// are rare in manifests, and refusing only costs speed.
fn yaml11_scalar(s: &str) -> bool {
    const BOOLS: [&str; 6] = ["y", "yes", "n", "no", "on", "off"];
    if BOOLS.iter().any(|b| s.eq_ignore_ascii_case(b)) {
        return true;
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let numeric = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'_' || b == b'.');
    let leading_zero =
        digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1].is_ascii_digit();
    numeric && (digits.contains('_') || leading_zero)
}

/// A mapping key: only a string scalar (a number or bool key reads differently per reader).
struct StrictKey(String);

impl<'de> Deserialize<'de> for StrictKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyVisitor).map(StrictKey)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
