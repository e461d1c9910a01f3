//! Proptest strategies shared by the property tests of the input parsers (test builds only):
//! JSON documents whose strings hold what trips hand-written scanners (quotes, backslashes,
//! brackets, control and non-ASCII characters), and ways to write one document differently.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// A character that a planted secret replaces (see [`plant`]).
pub const PLACEHOLDER: char = '§';

/// Short strings built from JSON's difficult characters and a few letters.
pub fn tricky_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        Just('"'),
        Just('\\'),
        Just('['),
        Just(']'),
        Just('{'),
        Just('}'),
        Just(':'),
        Just(','),
        Just('\n'),
        Just('\u{1}'),
        Just('é'),
        Just('😀'),
        Just(PLACEHOLDER),
        proptest::char::range('a', 'f'),
    ];
    proptest::collection::vec(c, 0..10).prop_map(|v| v.into_iter().collect())
}

/// A scalar; numbers are integers or quarters, which survive a text round trip exactly.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        tricky_string().prop_map(Value::String),
    ]
}

/// Any JSON value nested at most `depth` levels below its own.
pub fn value(depth: u32) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(depth, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((tricky_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object whose members nest at most `depth` levels below it.
pub fn object(depth: u32) -> impl Strategy<Value = Value> {
    proptest::collection::vec((tricky_string(), value(depth)), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// The nesting depth of arrays and objects: a scalar is 0, `{}` is 1.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => 0,
    }
}

/// Writes `v` as JSON with object members in reverse order, `ws` around every token, and,
/// where `escape` says so, ASCII letters and digits of strings as `\u` escapes: the same
/// document as `v.to_string()`, spelled differently.
pub fn write_differently(v: &Value, ws: &str, escape: &dyn Fn(usize) -> bool) -> String {
    let mut out = String::new();
    write_value(v, ws, escape, &mut out);
    out
}

fn write_value(v: &Value, ws: &str, escape: &dyn Fn(usize) -> bool, out: &mut String) {
    match v {
        Value::Object(map) => {
            out.push('{');
            for (i, (k, child)) in map.iter().rev().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                write_string(k, escape, out);
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                write_value(child, ws, escape, out);
                out.push_str(ws);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws);
                write_value(item, ws, escape, out);
                out.push_str(ws);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, escape, out),
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, escape: &dyn Fn(usize) -> bool, out: &mut String) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_alphanumeric() && escape(i) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            let quoted = serde_json::to_string(&c.to_string()).unwrap_or_default();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
    out.push('"');
}

/// `v` with every [`PLACEHOLDER`] in its strings and object keys replaced by `secret`.
pub fn plant(v: &Value, secret: &str) -> Value {
    let put = |s: &str| s.replace(PLACEHOLDER, secret);
    match v {
        Value::String(s) => Value::String(put(s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| plant(i, secret)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, c)| (put(k), plant(c, secret)))
                .collect(),
        ),
        scalar => scalar.clone(),
    }
}

/// Every string of `v`, object keys included.
pub fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, c)| std::iter::once(k.as_str()).chain(strings(c)))
            .collect(),
        Value::Null | Value::Bool(_) | Value::Number(_) => Vec::new(),
    }
}
