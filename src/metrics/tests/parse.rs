//! A small parser of the text exposition formats, enough to check names, types and labels.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
pub(super) struct Sample {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) value: f64,
}

#[derive(Debug, Default)]
pub(super) struct Exposition {
    /// family name → type, from `# TYPE`.
    pub(super) types: BTreeMap<String, String>,
    /// family names with a `# HELP` line.
    pub(super) helps: BTreeSet<String>,
    pub(super) samples: Vec<Sample>,
}

impl Exposition {
    pub(super) fn samples_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    pub(super) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples_of(name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

/// A strict-enough parser of the text formats: comments, `name{k="v",...} value` samples.
pub(super) fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE line has a type");
            assert!(
                out.types.insert(name.into(), ty.into()).is_none(),
                "family {name} declared twice"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP line has text");
            assert!(!help.is_empty(), "{name} has empty help");
            out.helps.insert(name.into());
        } else if line.starts_with('#') {
            // # UNIT / # EOF: checked by the callers.
        } else {
            out.samples.push(parse_sample(line));
        }
    }
    out
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).expect("sample has a value");
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        while !body.starts_with('}') {
            let (key, after) = body.split_once("=\"").expect("label has a quoted value");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("value closed") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            assert!(
                labels.insert(key.to_string(), value).is_none(),
                "duplicate label: {line}"
            );
            body = &after[end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
        rest = &body[1..];
    }
    let value = rest.trim().split(' ').next().expect("value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}
