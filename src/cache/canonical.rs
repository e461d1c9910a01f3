//! The canonical form of a JSON request body, which the cache key holds: object keys sorted, no
//! whitespace, strings and numbers as `serde_json` writes them. Bodies that differ only in key
//! order or spacing share one entry.
//!
//! Most bodies are canonical already (services serialise the same struct the same way), so one
//! scan ([`is_canonical`]) checks that first and the body is taken as it is; only the others are
//! parsed and written out again. The scan answers `true` only where writing the parsed body
//! would give back the same bytes (a property test holds it to that).

use std::borrow::Cow;

use serde_json::Value;

/// The canonical form of `body`: the body itself when it is canonical already. The body was
/// validated as a JSON object before; should parsing fail anyway, the raw bytes are used (still
/// correct, just less shared).
pub fn canonical(body: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical(body) {
        return Cow::Borrowed(body);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut out = Vec::with_capacity(body.len());
            write_canonical(&v, &mut out);
            Cow::Owned(out)
        }
        Err(_) => Cow::Borrowed(body),
    }
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string or a scalar into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Whether `body` is a JSON object already in canonical form: no whitespace; every object's
/// keys strictly increasing; strings without escapes or control characters (written back
/// unchanged); numbers only as plain integers of at most 18 digits, not `-0` (floats, exponents
/// and big integers are rewritten by the parser). Anything else, valid or not, is `false` and
/// takes the slow path.
fn is_canonical(body: &[u8]) -> bool {
    let mut scan = Scan { s: body, i: 0 };
    scan.s.first() == Some(&b'{') && scan.value(0) && scan.i == body.len()
}

/// Deeper than this is left to the parser (the gateway's own depth limit applies before).
const MAX_DEPTH: usize = 128;

struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().is_some(),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut last: Option<&'a [u8]> = None;
        loop {
            let Some(key) = self.string() else {
                return false;
            };
            if last.is_some_and(|l| l >= key) {
                return false;
            }
            last = Some(key);
            if !self.eat(b':') || !self.value(depth + 1) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string without escapes or control characters; its content.
    fn string(&mut self) -> Option<&'a [u8]> {
        let s: &'a [u8] = self.s;
        if s.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let len = memchr::memchr2(b'"', b'\\', &s[start..])?;
        let content = &s[start..start + len];
        if s[start + len] != b'"' || content.iter().any(|&b| b < 0x20) {
            return None;
        }
        // The body is UTF-8 (checked before); a string is written back byte for byte.
        self.i = start + len + 1;
        Some(content)
    }

    fn integer(&mut self) -> bool {
        let negative = self.eat(b'-');
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let n = self.i - digits;
        // One to 18 digits, no leading zero, and not `-0` (the parser writes it as `0`).
        let leading_zero = n > 1 && self.s[digits] == b'0';
        let minus_zero = negative && n == 1 && self.s[digits] == b'0';
        (1..=18).contains(&n)
            && !leading_zero
            && !minus_zero
            && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prop_strategies::{object, write_differently};
    use proptest::prelude::*;

    /// The slow path alone.
    fn rewritten(body: &[u8]) -> Option<Vec<u8>> {
        let v = serde_json::from_slice::<Value>(body).ok()?;
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        Some(out)
    }

    #[test]
    fn canonical_bodies_are_recognised_and_the_others_are_not() {
        for yes in [
            r#"{}"#,
            r#"{"extension_number":"101"}"#,
            r#"{"a":[1,-2,{"b":null,"c":true}],"b":false,"c":"é 😀"}"#,
            r#"{"a":123456789012345678}"#,
        ] {
            assert!(is_canonical(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e2}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":1234567890123456789}"#,
            r#"[1]"#,
            r#"{"a":1}x"#,
            r#"{"a":1"#,
            r#"{"a":tru}"#,
            "",
        ] {
            assert!(!is_canonical(no.as_bytes()), "{no}");
        }
    }

    proptest! {
        /// The fast path never changes a key: whenever it takes a body as it is, writing the
        /// parsed body gives the same bytes; and the written form of a body without floats is
        /// always taken as it is.
        #[test]
        fn a_body_taken_as_it_is_is_what_the_parser_would_write(
            v in object(4),
            seed in any::<u8>(),
        ) {
            let bodies = [
                v.to_string(),
                write_differently(&v, "", &|_| false),
                write_differently(&v, "", &|i| (i + usize::from(seed)) % 3 == 0),
            ];
            for body in &bodies {
                if is_canonical(body.as_bytes()) {
                    prop_assert_eq!(Some(body.as_bytes().to_vec()), rewritten(body.as_bytes()));
                }
            }
            let written = rewritten(bodies[0].as_bytes()).unwrap();
            let has_float = written.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
            let has_escape = written.contains(&b'\\');
            let long_int = bodies[0].split(|c: char| !c.is_ascii_digit()).any(|d| d.len() > 18);
            if !has_float && !has_escape && !long_int {
                prop_assert!(is_canonical(&written), "{}", String::from_utf8_lossy(&written));
            }
        }
    }
}
