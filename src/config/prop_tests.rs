//! Property tests of [`Config::parse`]: whatever the text, it never panics; a refusal always
//! lists at least one problem, each under a key path (or a TOML syntax position); and a bad
//! value planted at a key is reported under that key's path, however many others are wrong.

use std::path::Path;

use proptest::prelude::*;

use super::Config;

/// Keys with values the parser must accept and values it must refuse.
const KEYS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "server",
        "listen",
        &["\"127.0.0.1:0\""],
        &["\"nope\"", "5", "[]"],
    ),
    (
        "server",
        "max_body_bytes",
        &["1024"],
        &["0", "-1", "\"x\"", "1.5"],
    ),
    ("server", "max_connections", &["10"], &["0", "true"]),
    (
        "server",
        "header_read_timeout_ms",
        &["100"],
        &["0", "\"1s\""],
    ),
    (
        "server",
        "max_header_bytes",
        &["8192"],
        &["10", "[1]", "2000000"],
    ),
    (
        "server",
        "max_json_depth",
        &["64", "1"],
        &["0", "2000", "\"deep\""],
    ),
    (
        "server",
        "tenant_header",
        &["\"x-shop\""],
        &["\"bad header\"", "\"authorization\"", "1"],
    ),
    (
        "upstream",
        "base_url",
        &["\"https://api.etelecom.vn\""],
        &["\"ftp://x\"", "\"not a url\"", "7"],
    ),
    ("upstream", "timeout_ms", &["100"], &["0", "\"1s\""]),
    ("upstream", "connect_timeout_ms", &["100"], &["0", "{}"]),
    (
        "routing",
        "unknown_methods",
        &["\"reject\"", "\"forward\""],
        &["\"maybe\"", "false"],
    ),
    (
        "rate_limit",
        "requests_per_second",
        &["5"],
        &["0", "\"many\""],
    ),
    ("rate_limit", "mode", &["\"reject\""], &["\"drop\""]),
    ("cache", "max_ttl_secs", &["10"], &["\"x\"", "-3"]),
    ("cache", "enabled", &["true"], &["\"yes\""]),
    ("metrics", "tenant_label", &["false"], &["1"]),
    ("server", "no_such_key", &[], &["1"]),
];

/// One choice per key: left out, a good value, or a bad one.
fn choices() -> impl Strategy<Value = Vec<(usize, Option<(bool, usize)>)>> {
    (0..KEYS.len())
        .map(|i| {
            (
                Just(i),
                proptest::option::of((any::<bool>(), any::<usize>())),
            )
        })
        .collect::<Vec<_>>()
}

/// The config text for `picks`, and the key paths given a bad value.
fn render(picks: &[(usize, Option<(bool, usize)>)]) -> (String, Vec<String>) {
    let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
    let mut bad = Vec::new();
    for &(i, pick) in picks {
        let (section, key, good, wrong) = KEYS[i];
        let Some((want_bad, n)) = pick else { continue };
        let value = if want_bad || good.is_empty() {
            bad.push(format!("{section}.{key}"));
            wrong[n % wrong.len()]
        } else {
            good[n % good.len()]
        };
        let line = format!("{key} = {value}");
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some((_, lines)) => lines.push(line),
            None => sections.push((section, vec![line])),
        }
    }
    let mut text = String::new();
    for (section, lines) in sections {
        text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
    }
    text.push_str("[[tenants]]\nid = \"acme\"\napi_key = { env = \"A\" }\n");
    (text, bad)
}

fn env(name: &str) -> Option<String> {
    (name == "A").then(|| "1001:secret-value".to_owned())
}

/// A problem's key path: `server.listen`, `tenants[0].api_key.env`, ...
fn is_key_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            let name = seg.split('[').next().unwrap_or("");
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && seg[name.len()..].split_terminator(']').all(|idx| {
                    idx.strip_prefix('[')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
        })
}

fn check_problems(problems: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(!problems.is_empty(), "a refusal names at least one problem");
    for p in problems {
        let located = p.starts_with("TOML syntax")
            || p.split_once(": ")
                .is_some_and(|(path, _)| is_key_path(path));
        prop_assert!(located, "problem without a key path: {:?}", p);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every planted bad value is reported under its own key path; good values alone parse.
    #[test]
    fn every_bad_value_is_reported_at_its_path(picks in choices()) {
        let (text, bad) = render(&picks);
        match Config::parse(&text, Path::new("."), &env) {
            Ok(_) => prop_assert!(bad.is_empty(), "accepted bad values at {:?}:\n{}", bad, text),
            Err(e) => {
                check_problems(&e.problems)?;
                let paths: Vec<&str> = e
                    .problems
                    .iter()
                    .filter_map(|p| p.split_once(": ").map(|(path, _)| path))
                    .collect();
                for b in &bad {
                    prop_assert!(paths.contains(&b.as_str()), "{} not reported in {:?}\n{}", b, e.problems, text);
                }
                prop_assert!(!bad.is_empty(), "refused good values: {:?}\n{}", e.problems, text);
            }
        }
    }

    /// Arbitrary text, TOML-looking or not, never panics and is refused with located problems.
    #[test]
    fn arbitrary_text_never_panics(
        text in prop_oneof![
            "\\PC{0,80}",
            "(\\[[a-z_\\[\\]]{0,12}\\]\n|[a-z_]{1,16} = (\"[ -~]{0,10}\"|-?[0-9]{1,6}|true|\\{[^}]{0,10}\\}|\\[[^\\]]{0,10}\\])\n){0,8}",
        ],
    ) {
        if let Err(e) = Config::parse(&text, Path::new("."), &env) {
            check_problems(&e.problems)?;
        }
    }
}
