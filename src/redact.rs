//! The only route from request and response data to the logs.
//!
//! Bodies are shown only as JSON with every secret field of the catalogue masked at any depth
//! (inside arrays too); a body that is not JSON is shown by its length only. Headers are shown
//! with credentials masked: `Authorization` only ever as `Bearer [REDACTED]`. These types format
//! lazily, so they cost nothing unless the log level asks for them.

use std::fmt;

use http::HeaderMap;
use http::header;
use serde_json::Value;

pub const MASK: &str = "[REDACTED]";

/// A JSON body with the named fields masked.
pub struct Body<'a> {
    bytes: &'a [u8],
    secrets: &'a [Box<str>],
}

impl<'a> Body<'a> {
    pub fn new(bytes: &'a [u8], secrets: &'a [Box<str>]) -> Self {
        Self { bytes, secrets }
    }
}

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::from_slice::<Value>(self.bytes) {
            Ok(mut v) => {
                mask(&mut v, self.secrets);
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

/// Headers with credentials masked.
pub struct Headers<'a>(pub &'a HeaderMap);

impl fmt::Display for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let shown = if *name == header::AUTHORIZATION || *name == header::PROXY_AUTHORIZATION {
                match value.as_bytes().get(..7) {
                    Some(p) if p.eq_ignore_ascii_case(b"bearer ") => "Bearer [REDACTED]",
                    _ => MASK,
                }
            } else if value.is_sensitive() || *name == header::COOKIE || *name == header::SET_COOKIE
            {
                MASK
            } else {
                value.to_str().unwrap_or("<binary>")
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
        let shown = Body::new(body, &m.response_secrets).to_string();
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
        )
        .to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("oa_id"));
    }

    #[test]
    fn non_json_is_shown_by_length() {
        assert_eq!(
            Body::new(b"password=CANARY", &[]).to_string(),
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
        let shown = Headers(&h).to_string();
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(
            shown.contains("authorization: Bearer [REDACTED]"),
            "{shown}"
        );
        assert!(shown.contains("accept: application/json"), "{shown}");
    }
}
