//! Credential injection: the one place where the credential chosen for a call meets the request
//! sent upstream. A credential goes either into `Authorization: Bearer <key>` (the eTelecom API)
//! or into the JSON body's `username` and `password` (SMS brandname), never both.
//!
//! Body injection parses the (already validated) JSON object, sets both fields over whatever the
//! caller sent, and serializes it again, so a caller-supplied password can never reach the SMS
//! host. Header injection leaves the body byte for byte as the caller sent it.

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Map, Value};

use crate::catalogue::{BODY_CREDENTIAL_FIELDS, Placement};
use crate::error::GatewayError;
use crate::secret::{ApiKey, SmsCredentials};

/// A chosen credential, by where it goes.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    /// An eTelecom key, sent as `Authorization: Bearer <key>`.
    Header(&'a ApiKey),
    /// An SMS account, written into the JSON body.
    Body(&'a SmsCredentials),
}

impl Secret<'_> {
    pub fn placement(self) -> Placement {
        match self {
            Self::Header(_) => Placement::Header,
            Self::Body(_) => Placement::Body,
        }
    }

    /// The fingerprint logged when eTelecom refuses the credential: the key's, or the SMS
    /// password's (the part that is rotated).
    pub fn fingerprint(self) -> String {
        match self {
            Self::Header(k) => k.fingerprint(),
            Self::Body(c) => c.password.fingerprint(),
        }
    }
}

/// What goes upstream: the `Authorization` value (if the credential goes there) and the body.
#[derive(Debug)]
pub struct Injected<'a> {
    pub authorization: Option<&'a HeaderValue>,
    pub body: Bytes,
}

/// Puts `secret` into the outgoing request whose body is `body` (a JSON object, as checked by
/// `body::json_object`).
pub fn inject(secret: Secret<'_>, body: Bytes) -> Result<Injected<'_>, GatewayError> {
    match secret {
        Secret::Header(key) => Ok(Injected {
            authorization: Some(key.bearer()),
            body,
        }),
        Secret::Body(creds) => {
            let mut map: Map<String, Value> =
                serde_json::from_slice(&body).map_err(|_| GatewayError::BodyNotJsonObject)?;
            let [user_field, password_field] = BODY_CREDENTIAL_FIELDS;
            map.insert(
                user_field.to_owned(),
                Value::String(creds.username.expose().to_owned()),
            );
            map.insert(
                password_field.to_owned(),
                Value::String(creds.password.expose().to_owned()),
            );
            let bytes = serde_json::to_vec(&map)
                .map_err(|_| GatewayError::Internal("re-serializing an SMS body"))?;
            Ok(Injected {
                authorization: None,
                body: Bytes::from(bytes),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretText;

    fn creds() -> SmsCredentials {
        let t = |s: &str| SecretText::new(s.to_owned()).expect("text");
        SmsCredentials {
            username: t("acme-sms"),
            password: t("pa\"ss word"),
        }
    }

    #[test]
    fn body_credentials_replace_the_callers_and_keep_every_other_field() {
        let c = creds();
        let body = Bytes::from_static(
            br#"{"username":"caller","password":"caller-pw","phonenumber":"84901234567","list_param":{"otp":"1"},"n":12345678901234}"#,
        );
        let out = inject(Secret::Body(&c), body).expect("inject");
        assert!(out.authorization.is_none());
        let v: Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(v["username"], "acme-sms");
        assert_eq!(v["password"], "pa\"ss word");
        assert_eq!(v["phonenumber"], "84901234567");
        assert_eq!(v["list_param"]["otp"], "1");
        assert_eq!(v["n"], 12345678901234u64);
        assert!(!String::from_utf8_lossy(&out.body).contains("caller"));
    }

    #[test]
    fn an_empty_object_gets_both_fields() {
        let c = creds();
        let out = inject(Secret::Body(&c), Bytes::from_static(b"{}")).expect("inject");
        let v: Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(v.as_object().expect("object").len(), 2);
    }

    #[test]
    fn header_credentials_leave_the_body_untouched() {
        let key = ApiKey::new("1:k").expect("key");
        let body = Bytes::from_static(b" {\"password\":\"x\"} ");
        let out = inject(Secret::Header(&key), body.clone()).expect("inject");
        assert_eq!(out.authorization, Some(key.bearer()));
        assert_eq!(out.body, body);
    }

    #[test]
    fn a_non_object_body_is_refused() {
        let c = creds();
        for bad in [&b"[]"[..], b"1", b"{"] {
            let err = inject(Secret::Body(&c), Bytes::from_static(bad)).unwrap_err();
            assert!(matches!(err, GatewayError::BodyNotJsonObject), "{bad:?}");
        }
    }
}
