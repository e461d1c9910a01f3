//! The only route from request and response data to the logs, and the scrubbing of secret
//! values from anything the gateway shows or relays.
//!
//! Two defences, both needed:
//! - **Field masking**: bodies are shown only as JSON with every secret field of the catalogue
//!   masked at any depth (inside arrays too); a body that is not JSON is shown by its length
//!   only. Headers are shown with credentials masked: `Authorization` only ever as
//!   `Bearer [REDACTED]`.
//! - **Value scrubbing** ([`Scrubber`]): the values of every secret in use (built from the
//!   config at each snapshot build, so a reload swaps them) are replaced by [`MASK`] wherever
//!   they occur, whatever field or string holds them: eTelecom may quote the key it was sent in
//!   an error message. One Aho-Corasick automaton searches for all of them at once; it runs only
//!   where needed (debug body logging, relayed non-2xx bodies).
//!
//! The display types format lazily, so they cost nothing unless the log level asks for them.

use std::borrow::Cow;
use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;
use http::HeaderMap;
use http::header;
use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// Secret values shorter than this are not searched for: a 1–3 byte pattern would shred every
/// log line and protects nothing.
pub const MIN_SCRUB_LEN: usize = 4;

/// Replaces every occurrence of the registered secret values with [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    /// `None` when no secret is registered.
    automaton: Option<AhoCorasick>,
}

impl Scrubber {
    /// Builds one automaton over `secrets`, each also in its JSON-escaped form when that differs
    /// (so a raw JSON body quoting it is caught too). Values shorter than [`MIN_SCRUB_LEN`] are
    /// skipped.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            if s.len() < MIN_SCRUB_LEN {
                continue;
            }
            if let Ok(text) = std::str::from_utf8(s) {
                let quoted = serde_json::to_string(text).unwrap_or_default();
                let escaped = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or(text);
                if escaped != text {
                    patterns.push(escaped.as_bytes().to_vec());
                }
            }
            patterns.push(s.to_vec());
        }
        patterns.sort_unstable();
        patterns.dedup();
        let automaton = (!patterns.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        Self { automaton }
    }

    /// Whether `hay` holds a secret value.
    pub fn finds(&self, hay: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|a| a.is_match(hay))
    }

    /// `hay` with every secret value replaced; borrowed when there was none.
    pub fn scrub<'h>(&self, hay: &'h [u8]) -> Cow<'h, [u8]> {
        match &self.automaton {
            Some(a) if a.is_match(hay) => {
                let mut out = Vec::with_capacity(hay.len());
                a.replace_all_with_bytes(hay, &mut out, |_, _, dst| {
                    dst.extend_from_slice(MASK.as_bytes());
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(hay),
        }
    }

    /// [`Scrubber::scrub`] for text.
    pub fn scrub_str<'h>(&self, hay: &'h str) -> Cow<'h, str> {
        match &self.automaton {
            Some(a) if a.is_match(hay) => {
                let mut out = String::with_capacity(hay.len());
                a.replace_all_with(hay, &mut out, |_, _, dst| {
                    dst.push_str(MASK);
                    true
                });
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(hay),
        }
    }

    /// Scrubs every string of a JSON document, object keys included, at any depth; returns
    /// whether anything changed. Escapes are already decoded here, so `\u0031...` spellings
    /// of a key are caught too.
    pub fn scrub_json(&self, v: &mut Value) -> bool {
        if self.automaton.is_none() {
            return false;
        }
        match v {
            Value::String(s) => match self.scrub_str(s) {
                Cow::Owned(clean) => {
                    *s = clean;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, i| self.scrub_json(i) | changed),
            Value::Object(map) => {
                let mut changed = false;
                if map.keys().any(|k| self.finds(k.as_bytes())) {
                    let old = std::mem::take(map);
                    for (k, child) in old {
                        map.insert(self.scrub_str(&k).into_owned(), child);
                    }
                    changed = true;
                }
                map.values_mut()
                    .fold(changed, |changed, c| self.scrub_json(c) | changed)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// A body relayed to a caller with every secret value replaced. A JSON body is scrubbed in
    /// its decoded strings (so escaped spellings are caught and the result stays valid JSON)
    /// and re-serialised; any other body in its raw bytes. The same `Bytes` when there was
    /// nothing to replace.
    pub fn scrub_relayed(&self, body: Bytes) -> Bytes {
        if self.automaton.is_none() || (!body.contains(&b'\\') && !self.finds(&body)) {
            return body;
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) => {
                if self.scrub_json(&mut v) {
                    Bytes::from(v.to_string())
                } else {
                    body
                }
            }
            Err(_) => match self.scrub(&body) {
                Cow::Borrowed(_) => body,
                Cow::Owned(clean) => Bytes::from(clean),
            },
        }
    }
}

/// A JSON body with the named fields masked and every secret value scrubbed.
pub struct Body<'a> {
    bytes: &'a [u8],
    secrets: &'a [Box<str>],
    scrubber: &'a Scrubber,
}

impl<'a> Body<'a> {
    pub fn new(bytes: &'a [u8], secrets: &'a [Box<str>], scrubber: &'a Scrubber) -> Self {
        Self {
            bytes,
            secrets,
            scrubber,
        }
    }
}

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::from_slice::<Value>(self.bytes) {
            Ok(mut v) => {
                mask(&mut v, self.secrets);
                self.scrubber.scrub_json(&mut v);
                write!(f, "{v}")
            }
            Err(_) => write!(f, "<{} bytes, not JSON>", self.bytes.len()),
        }
    }
}

/// Replaces the value of every field named in `secrets`, at any depth.
pub fn mask(v: &mut Value, secrets: &[Box<str>]) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if secrets.iter().any(|s| **s == **k) {
                    *child = Value::String(MASK.to_owned());
                } else {
                    mask(child, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask(i, secrets)),
        _ => {}
    }
}

/// Headers with credentials masked and secret values scrubbed from the others.
pub struct Headers<'a>(pub &'a HeaderMap, pub &'a Scrubber);

impl fmt::Display for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let scrubbed;
            let shown = if *name == header::AUTHORIZATION || *name == header::PROXY_AUTHORIZATION {
                match value.as_bytes().get(..7) {
                    Some(p) if p.eq_ignore_ascii_case(b"bearer ") => "Bearer [REDACTED]",
                    _ => MASK,
                }
            } else if value.is_sensitive() || *name == header::COOKIE || *name == header::SET_COOKIE
            {
                MASK
            } else {
                scrubbed = self.1.scrub_str(value.to_str().unwrap_or("<binary>"));
                &scrubbed
            };
            write!(f, "{name}: {shown}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use http::HeaderValue;

    #[test]
    fn secrets_are_masked_at_any_depth_and_in_lists() {
        let c = Catalogue::get();
        let m = c
            .lookup("/v1/shop.Etelecom/GetExtensions")
            .expect("GetExtensions");
        let body = br#"{"extensions":[{"extension_number":"101","extension_password":"CANARY-1"},
            {"nested":{"password":"CANARY-2","deeper":[{"api_key":"CANARY-3"}]}}],
            "auth_token":"CANARY-4","shop_key":"CANARY-5","app_secret":"CANARY-6","auth_url":"CANARY-7",
            "code":"ok"}"#;
        let shown = Body::new(body, &m.response_secrets, &Scrubber::default()).to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("\"extension_number\":\"101\""), "{shown}");
        assert!(
            shown.contains("\"code\":\"ok\""),
            "error codes stay visible: {shown}"
        );
    }

    #[test]
    fn connect_oa_code_is_masked_in_its_request_only() {
        let c = Catalogue::get();
        let m = c.lookup("/v1/partner.Zalo/ConnectOA").expect("ConnectOA");
        let shown = Body::new(
            br#"{"code":"CANARY-oauth","oa_id":"1"}"#,
            &m.request_secrets,
            &Scrubber::default(),
        )
        .to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("oa_id"));
    }

    #[test]
    fn non_json_is_shown_by_length() {
        assert_eq!(
            Body::new(b"password=CANARY", &[], &Scrubber::default()).to_string(),
            "<15 bytes, not JSON>"
        );
    }

    #[test]
    fn credentials_in_headers_are_masked() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 1:CANARY"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("s=CANARY"));
        let mut sensitive = HeaderValue::from_static("CANARY");
        sensitive.set_sensitive(true);
        h.insert("x-other", sensitive);
        h.insert("accept", HeaderValue::from_static("application/json"));
        h.insert("x-echo", HeaderValue::from_static("key 1:CANARY-in-header"));
        let scrubber = Scrubber::new([&b"1:CANARY-in-header"[..]]);
        let shown = Headers(&h, &scrubber).to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(
            shown.contains("authorization: Bearer [REDACTED]"),
            "{shown}"
        );
        assert!(shown.contains("accept: application/json"), "{shown}");
    }

    const KEY: &str = "1001:CANARY-secret";

    fn scrubber() -> Scrubber {
        Scrubber::new([KEY.as_bytes(), b"CANARY-secret", b"x", b""])
    }

    #[test]
    fn secret_values_are_scrubbed_in_any_string_at_any_depth() {
        let body = format!(
            r#"{{"code":"unauthenticated","msg":"invalid token: Bearer {KEY}",
            "meta":{{"deep":[{{"x":["{KEY}"]}}],"{KEY}":1,"partial":"only CANARY-secret"}}}}"#
        );
        let shown = Body::new(body.as_bytes(), &[], &scrubber()).to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(
            shown.contains("\"msg\":\"invalid token: Bearer [REDACTED]\""),
            "{shown}"
        );
        assert!(shown.contains("\"code\":\"unauthenticated\""), "{shown}");
    }

    #[test]
    fn relayed_bodies_lose_raw_and_escaped_spellings() {
        let s = scrubber();
        let raw = Bytes::from(format!(r#"{{"msg":"bad key {KEY}"}}"#));
        let out = s.scrub_relayed(raw);
        assert_eq!(out, r#"{"msg":"bad key [REDACTED]"}"#);
        // \u0031 is "1" and \u0043 is "C": only a decoder sees the key.
        let escaped = Bytes::from_static(br#"{"msg":"bad key \u00310\u00301:\u0043ANARY-secret"}"#);
        let out = s.scrub_relayed(escaped);
        assert!(!String::from_utf8_lossy(&out).contains("CANARY"), "{out:?}");
        let v: Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(v["msg"], "bad key [REDACTED]");
        // Not JSON at all: the raw bytes are scrubbed.
        let text = Bytes::from(format!("<html>{KEY}</html>"));
        assert_eq!(s.scrub_relayed(text), "<html>[REDACTED]</html>");
        // Nothing to replace: the very same bytes.
        let clean = Bytes::from_static(br#"{"msg":"x \" y"}"#);
        assert_eq!(s.scrub_relayed(clean.clone()).as_ptr(), clean.as_ptr());
    }

    #[test]
    fn short_values_are_not_searched_for_and_json_escapes_are() {
        let s = scrubber();
        assert_eq!(s.scrub(b"x marks"), &b"x marks"[..]);
        let quoted = Scrubber::new([&br#"9:a"b\c"#[..]]);
        assert_eq!(
            quoted.scrub(br#"{"m":"9:a\"b\\c"}"#),
            &br#"{"m":"[REDACTED]"}"#[..]
        );
        assert!(!Scrubber::default().finds(KEY.as_bytes()));
    }

    mod props {
        use super::super::*;
        use crate::prop_strategies::{PLACEHOLDER, object, plant, strings, write_differently};
        use proptest::prelude::*;

        /// An eTelecom-shaped key whose secret part holds the characters JSON escapes.
        fn key() -> impl Strategy<Value = (String, String)> {
            ("[0-9]{1,6}", "[a-z0-9_\"\\\\-]{4,16}")
                .prop_map(|(id, part)| (format!("{id}:{part}"), part))
        }

        fn leaks(text: &str, key: &str, part: &str) -> bool {
            text.contains(key) || text.contains(part)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// A key (or its secret part) planted in any string or object key, at any depth,
            /// spelled raw or with `\u` escapes, survives neither the logged body nor the
            /// relayed one; the relayed body stays valid JSON.
            #[test]
            fn no_planted_secret_survives(
                doc in object(4),
                (key, part) in key(),
                ws in prop_oneof![Just(""), Just(" ")],
                seed in any::<u8>(),
                only_part in any::<bool>(),
            ) {
                let planted_value = if only_part { part.clone() } else { key.clone() };
                let mut planted = plant(&doc, &planted_value);
                if let Value::Object(map) = &mut planted {
                    map.insert("msg".into(), Value::String(format!("bad token Bearer {key}{PLACEHOLDER}")));
                }
                let text = write_differently(&planted, ws, &|i| (i + usize::from(seed)) % 4 == 0);
                let scrubber = Scrubber::new([key.as_bytes(), part.as_bytes()]);

                let shown = Body::new(text.as_bytes(), &[], &scrubber).to_string();
                prop_assert!(!leaks(&shown, &key, &part), "logged: {}", shown);
                let shown: Value = serde_json::from_str(&shown).expect("logged JSON");
                for s in strings(&shown) {
                    prop_assert!(!leaks(s, &key, &part), "logged string: {:?}", s);
                }

                let relayed = scrubber.scrub_relayed(Bytes::from(text));
                let relayed_text = String::from_utf8_lossy(&relayed);
                prop_assert!(!leaks(&relayed_text, &key, &part), "relayed: {}", relayed_text);
                let relayed: Value = serde_json::from_slice(&relayed).expect("relayed JSON");
                for s in strings(&relayed) {
                    prop_assert!(!leaks(s, &key, &part), "relayed string: {:?}", s);
                }
            }

            /// Text that is not JSON is scrubbed in its raw bytes.
            #[test]
            fn no_secret_survives_in_plain_text(
                before in "[ -~]{0,20}",
                after in "[ -~]{0,20}",
                (key, part) in key(),
            ) {
                let scrubber = Scrubber::new([key.as_bytes(), part.as_bytes()]);
                let text = format!("<p>{before}{key}{after}{part}</p>");
                let out = scrubber.scrub_relayed(Bytes::from(text));
                prop_assert!(!leaks(&String::from_utf8_lossy(&out), &key, &part));
            }
        }
    }
}
