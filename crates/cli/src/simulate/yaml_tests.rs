use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Strict, for_each_document, may_have_aliases, reference};

/// What a reader returned: the documents with their indices, then the error if any.
type Read = (Vec<(usize, Value)>, Option<String>);

fn read_with(text: &str, fast: bool) -> Read {
    let mut documents = Vec::new();
    let add = |index, value| {
        documents.push((index, value));
        Ok::<(), String>(())
    };
    let result = if fast {
        for_each_document(text, |m| m, add)
    } else {
        reference(text, 0, |m| m, add)
    };
    (documents, result.err())
}

/// Whether the fast path alone reads `text` (no fallback to serde-saphyr).
fn fast_path_alone(text: &str) -> bool {
    !may_have_aliases(text)
        && yaml_serde::Deserializer::from_str(text).all(|d| Strict::deserialize(d).is_ok())
}

fn assert_same(text: &str) {
    assert_eq!(
        read_with(text, true),
        read_with(text, false),
        "fast path and serde-saphyr differ on:\n{text}"
    );
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn the_repositorys_manifests_read_the_same_and_on_the_fast_path() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [
        "examples",
        "crates/api/tests",
        "crates/cli/tests/data",
        "charts/karpenter/crds",
    ] {
        yaml_files(&root.join(dir), &mut files);
    }
    // The invalid-NodePool fixtures are valid YAML (invalid only for the CRD schema), so every
    // file here must stay on the fast path; fewer files than this means the walk broke.
    assert!(files.len() >= 50, "found only {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("repository file");
        assert_same(&text);
        assert!(
            fast_path_alone(&text),
            "{} left the fast path",
            file.display()
        );
    }
}

#[test]
fn core_schema_scalars_read_as_serde_saphyr_reads_them() {
    let scalars = [
        "a: null",
        "a: ~",
        "a:",
        "a: Null",
        "a: true",
        "a: True",
        "a: FALSE",
        "a: yes",
        "a: no",
        "a: on",
        "a: off",
        "a: y",
        "a: 0",
        "a: -17",
        "a: +17",
        "a: 0o17",
        "a: 0x1F",
        "a: 017",
        "a: 1_000",
        "a: 1.5",
        "a: .5",
        "a: -1.",
        "a: 1e3",
        "a: 1E-3",
        "a: .inf",
        "a: -.Inf",
        "a: .nan",
        "a: 18446744073709551615",
        "a: 18446744073709551616",
        "a: -9223372036854775809",
        "a: '123'",
        "a: \"true\"",
        "a: 100m",
        "a: 1Gi",
        "a: 2026-12-05",
        "a: 12:30:00",
        "a: 0.1.2",
        "a: '' ",
        "a: \"\\u00e9\\t\"",
        "a: |\n  x\n  y\n",
        "a: >\n  x\n  y\n",
        "a: |-\n  x\n",
        "a: [1, 'b', c]",
        "a: {b: 1, c: [d]}",
        "a: !!str 123",
        "a: !!int '7'",
        "a: !custom x",
        "1: a",
        "true: a",
        "null: a",
        "? [a]\n: b",
        "a: &x [1]\nb: *x",
        "a: n",
        "a: Yes",
        "a: NO",
        "a: On",
        "a: Y",
        "a: 'yes'",
        "a: 0_1",
        "a: 1_0.5",
        "a: 00",
        "a: 08:00",
        "a: 0755",
        "a: -012",
        "a: 0.5",
        "a: 10.0",
        "a: '017'",
        "a: 1_",
        "a: _1",
    ];
    let mut diffs = Vec::new();
    for text in scalars {
        let (f, r) = (read_with(text, true), read_with(text, false));
        if f != r {
            diffs.push(format!("{text:?}: fast {f:?} reference {r:?}"));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn document_boundaries_and_empty_documents_are_counted_alike() {
    for text in [
        "",
        "---",
        "---\n---\n",
        "a: 1\n---\n---\nb: 2\n",
        "--- null\n--- a\n---\n- 1\n",
        "a: 1\n...\n---\nb: 2\n",
        "# only a comment\n",
        "\u{feff}a: 1\n---\nb: 2\n",
        "a: 1\r\nb:\r\n  - x\r\n---\r\nc: 'y'\r\n",
        "a:\tb\n",
        "a: \"multi\n  line\"\n",
    ] {
        assert_same(text);
    }
}

#[test]
fn what_the_fast_path_refuses_is_left_to_serde_saphyr() {
    // Each of these makes the fast path give up at the second document; the first must not be
    // delivered twice and the rest must be read by serde-saphyr with its indices.
    let refused = [
        "a: 1\nb: 2\na: 3\n",                      // duplicate key: serde-saphyr refuses
        "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n", // merge key: serde-saphyr merges
        "a: !custom x\n",                          // a tag
        "a: [1, 2\n",                              // syntax error: serde-saphyr's message
        "a: .inf\n",                               // not JSON
    ];
    for bad in refused {
        let text = format!("first: 1\n---\n{bad}---\nlast: 2\n");
        assert!(!fast_path_alone(&text), "fast path accepted:\n{text}");
        let (documents, error) = read_with(&text, true);
        assert_eq!(documents.first(), Some(&(0, json!({"first": 1}))));
        assert_eq!(
            documents.iter().filter(|(i, _)| *i == 0).count(),
            1,
            "document 0 delivered twice for:\n{text}"
        );
        assert_eq!((documents, error), read_with(&text, false), "on:\n{text}");
    }
}

#[test]
fn nesting_past_serde_saphyr_s_depth_limit_is_refused_alike() {
    for depth in [30, 63, 64, 65, 100, 200] {
        let text = format!("a: {}1{}\n", "[".repeat(depth), "]".repeat(depth));
        assert_same(&text);
        let block: String = (0..depth)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        assert_same(&format!("{block}{}v: 1\n", "  ".repeat(depth)));
    }
}

#[test]
fn streams_with_aliases_are_read_by_serde_saphyr_alone() {
    // One anchor aliased 30 times: serde-saphyr's alias/anchor ratio budget decides, not libyaml.
    let aliases = (0..30).map(|i| format!("k{i}: *r\n")).collect::<String>();
    let text = format!("first: 1\n---\nbase: &r {{cpu: 1}}\n{aliases}");
    assert!(may_have_aliases(&text));
    assert_same(&text);
    for no in [
        "schedule: \"0 * * * *\"",
        "host: '*.example.com'",
        "a: 2*3",
        "a: \"*/5\"",
    ] {
        assert!(!may_have_aliases(no), "{no}");
    }
    for yes in ["a: *x", "- *x", "a: [*x]", "{a: *x}", "*x: 1", "a: [1,*x]"] {
        assert!(may_have_aliases(yes), "{yes}");
    }
}

#[test]
fn an_alias_bomb_is_refused_with_serde_saphyr_s_message() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let (documents, error) = read_with(&text, true);
    assert!(documents.is_empty());
    let error = error.expect("an alias bomb must be refused");
    assert_eq!(Some(error), read_with(&text, false).1);
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 :#'\"./_-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("yes"),
            Just("~"),
            Just("0x10"),
            Just("1e3"),
            Just("null"),
            Just("-")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z][a-z0-9.-]{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Documents written by serde-saphyr (quoting wherever YAML needs it) read back the same
    /// through both paths, as one stream.
    #[test]
    fn written_documents_read_the_same(values in prop::collection::vec(json_value(), 1..4)) {
        let mut text = String::new();
        for value in &values {
            text.push_str("---\n");
            text.push_str(&serde_saphyr::to_string(value).expect("serializable"));
        }
        let fast = read_with(&text, true);
        prop_assert_eq!(&fast, &read_with(&text, false), "on:\n{}", text);
    }
}
