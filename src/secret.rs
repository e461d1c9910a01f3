//! Secrets: where they come from (`{ env = "NAME" }` or `{ file = "PATH" }`) and the types that
//! hold them once loaded: [`ApiKey`] (an eTelecom key) and [`SecretText`] (a free-form secret such
//! as the SMS account's `username` and `password`, held together as [`SmsCredentials`]).
//!
//! A loaded key lives only in memory, as the ready-made `Authorization: Bearer <key>` header value
//! (marked sensitive, so hyper and h2 never index or print it). Its `Debug` and `Display` print a
//! placeholder; the only thing about it that may be shown is a short SHA-256 fingerprint, so ops
//! can tell which version of a key is loaded without seeing it.

use std::fmt;
use std::path::{Path, PathBuf};

use http::HeaderValue;
use serde::Deserialize;

/// Where a secret is read from. Exactly one of the two keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable; unset or empty is an error.
    Env(String),
    /// A file; one trailing newline (`\n` or `\r\n`) is trimmed, as Kubernetes Secret volumes
    /// need. Relative paths are resolved against the config file's folder.
    File(PathBuf),
}

/// How secrets are looked up. Production reads the process environment and the file system;
/// tests hand in their own environment, so no test has to mutate the process's.
pub trait SecretSource: Send + Sync {
    fn env(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The real process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String> + Send + Sync> SecretSource for F {
    fn env(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl SecretRef {
    /// Resolves the reference to an eTelecom key. The error text names the source, never the
    /// value.
    pub fn load(&self, base_dir: &Path, source: &dyn SecretSource) -> Result<ApiKey, String> {
        let raw = self.load_text(base_dir, source)?;
        ApiKey::new(&raw).map_err(|why| format!("{} {why}", self.describe()))
    }

    /// Resolves the reference to a free-form secret (any non-empty text without control
    /// characters: an SMS username or password). The error text names the source, never the
    /// value.
    pub fn load_secret_text(
        &self,
        base_dir: &Path,
        source: &dyn SecretSource,
    ) -> Result<SecretText, String> {
        let raw = self.load_text(base_dir, source)?;
        SecretText::new(raw).map_err(|why| format!("{} {why}", self.describe()))
    }

    /// Resolves the reference to its text (not empty, one trailing newline of a file trimmed).
    /// The error text names the source, never the value.
    pub fn load_text(&self, base_dir: &Path, source: &dyn SecretSource) -> Result<String, String> {
        Ok(match self {
            // A key pasted where the variable's name goes must not be echoed back.
            Self::Env(name) if !valid_env_name(name) => {
                return Err(
                    "is not a valid environment variable name (letters, digits, _ . - \
                     only); a key is never written in the config itself"
                        .into(),
                );
            }
            Self::Env(name) => match source.env(name) {
                None => return Err(format!("environment variable {name} is not set")),
                Some(v) if v.is_empty() => {
                    return Err(format!("environment variable {name} is empty"));
                }
                Some(v) => v,
            },
            Self::File(path) => {
                let full = base_dir.join(path);
                let text = source
                    .read_file(&full)
                    .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
                let trimmed = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                if trimmed.is_empty() {
                    return Err(format!("secret file {} is empty", full.display()));
                }
                trimmed.to_owned()
            }
        })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable {name}"),
            Self::File(path) => format!("secret file {}", path.display()),
        }
    }
}

/// Environment variable names as shells and Kubernetes accept them. eTelecom keys always hold a
/// `:`, so a key written in place of a name is caught here.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A loaded eTelecom key.
#[derive(Clone)]
pub struct ApiKey {
    bearer: HeaderValue,
    fingerprint: [u8; 4],
}

impl ApiKey {
    /// Builds the key from its text. It must be visible ASCII without spaces (eTelecom keys are
    /// `<id>:<secret>` or `shop<id>:<secret>`).
    pub fn new(key: &str) -> Result<Self, &'static str> {
        if key.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("holds whitespace or non-ASCII characters; a key is printable ASCII");
        }
        let mut bearer =
            HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| "is not a valid header")?;
        bearer.set_sensitive(true);
        Ok(Self {
            bearer,
            fingerprint: fingerprint(key),
        })
    }

    /// The `Authorization` header value to send upstream (cheap to clone: shared bytes).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// The first 8 hex digits of the key's SHA-256: enough to tell key versions apart.
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }

    /// The values to scrub from logs and relayed bodies: the whole key, and its secret part
    /// (after the first `:`) on its own, which an error message may quote without the id.
    pub fn secret_values(&self) -> impl Iterator<Item = &[u8]> {
        let key = &self.bearer.as_bytes()["Bearer ".len()..];
        let part = key
            .iter()
            .position(|&b| b == b':')
            .map(|colon| &key[colon + 1..]);
        std::iter::once(key).chain(part)
    }

    /// Whether the key has the shape eTelecom issues for this use: `shop<id>:<secret>` for a
    /// partner-issued shop key, `<id>:<secret>` for an account's own key.
    pub fn looks_like(&self, shop_key: bool) -> bool {
        let key = &self.bearer.as_bytes()["Bearer ".len()..];
        let Some(colon) = key.iter().position(|&b| b == b':') else {
            return false;
        };
        let id = &key[..colon];
        let (prefixed, digits) = match id.strip_prefix(b"shop") {
            Some(rest) => (true, rest),
            None => (false, id),
        };
        prefixed == shop_key && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.bearer == other.bearer
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A Redis URL (`[cluster] redis_url`), which may hold a password (`redis://:pw@host`,
/// `rediss://user:pw@host`, `unix:///path?pass=pw`). It never prints the password: `Debug`,
/// `Display` and [`RedisUrl::shown`] put its short SHA-256 fingerprint in its place.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    text: String,
    shown: String,
    password: Option<String>,
}

impl RedisUrl {
    /// Checks the scheme and the shape; the error never quotes the URL.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "unix://", "redis+unix://"];
        if !SCHEMES.iter().any(|s| text.starts_with(s)) {
            return Err("must start with redis://, rediss:// (TLS) or unix://");
        }
        if text.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("holds whitespace or non-ASCII characters");
        }
        let (shown, password) = Self::mask(text);
        Ok(Self {
            text: text.to_owned(),
            shown,
            password,
        })
    }

    /// The URL itself, for the Redis client only.
    pub(crate) fn expose(&self) -> &str {
        &self.text
    }

    /// The password the URL holds, if any (for secret scrubbing; never for printing).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// What the scrubber keeps out of logs: the password (when there is one) and the whole URL.
    pub fn secret_values(&self) -> impl Iterator<Item = &[u8]> {
        self.password
            .iter()
            .map(|p| p.as_bytes())
            .chain(self.password.is_some().then_some(self.text.as_bytes()))
    }

    /// The URL with its password replaced by `sha256:<8 hex digits>`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Splits out the password (user info of a `redis[s]://` URL, or a `pass` / `password`
    /// query parameter) and builds the shown form.
    fn mask(text: &str) -> (String, Option<String>) {
        let fp = |pw: &str| {
            let d = ring::digest::digest(&ring::digest::SHA256, pw.as_bytes());
            let hex: String = d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        };
        let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let mut password = None;
        let mut shown = format!("{scheme}://");
        let authority_end = before_query.find('/').unwrap_or(before_query.len());
        let (authority, path) = before_query.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    Some((user, pw)) if !pw.is_empty() => {
                        shown.push_str(&format!("{user}:{}@", fp(pw)));
                        password = Some(pw.to_owned());
                    }
                    _ => shown.push_str(&format!("{}@", fp(userinfo))),
                }
                if password.is_none() && !userinfo.contains(':') {
                    // `redis://password@host` is read as a password by some clients.
                    password = Some(userinfo.to_owned());
                }
                shown.push_str(host);
            }
            None => shown.push_str(authority),
        }
        shown.push_str(path);
        if let Some(q) = query {
            let parts: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if k == "pass" || k == "password" => {
                        password = Some(v.to_owned());
                        format!("{k}={}", fp(v))
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            shown.push('?');
            shown.push_str(&parts.join("&"));
        }
        (shown, password)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.shown)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A loaded free-form secret. Only [`SecretText::expose`] gives the text (for the one place
/// that sends it upstream); `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText {
    text: Box<str>,
    fingerprint: [u8; 4],
}

impl SecretText {
    /// Takes ownership of `text`. It must not be empty or hold control characters (a pasted
    /// newline in the middle of a password is a mistake, not a password).
    pub fn new(text: String) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("is empty");
        }
        if text.chars().any(char::is_control) {
            return Err("holds control characters (a line break?)");
        }
        Ok(Self {
            fingerprint: fingerprint(&text),
            text: text.into_boxed_str(),
        })
    }

    /// The secret itself: only for the request that carries it upstream.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The first 8 hex digits of the text's SHA-256.
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([REDACTED])")
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A tenant's SMS brandname account: both fields travel in the JSON body of every SMS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsCredentials {
    pub username: SecretText,
    pub password: SecretText,
}

fn fingerprint(text: &str) -> [u8; 4] {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 4];
    out.copy_from_slice(&digest.as_ref()[..4]);
    out
}

fn hex(bytes: &[u8; 4]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn secret_text_never_prints_and_refuses_control_characters() {
        let s = SecretText::new("sms canary pässword".to_owned()).expect("text");
        assert!(!format!("{s:?}").contains("canary"));
        assert!(!format!("{s}").contains("canary"));
        let creds = SmsCredentials {
            username: s.clone(),
            password: s.clone(),
        };
        assert!(!format!("{creds:?}").contains("canary"), "{creds:?}");
        assert_eq!(s.expose(), "sms canary pässword");
        assert_eq!(s.fingerprint().len(), 8);
        assert!(SecretText::new(String::new()).is_err());
        assert!(SecretText::new("a\nb".to_owned()).is_err());
    }

    #[test]
    fn load_secret_text_keeps_spaces_and_trims_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), "two words\n").expect("write");
        std::fs::write(dir.path().join("bad"), "a\nb\n").expect("write");
        let src = |_: &str| None;
        let got = SecretRef::File("pw".into())
            .load_secret_text(dir.path(), &src)
            .expect("pw");
        assert_eq!(got.expose(), "two words");
        let err = SecretRef::File("bad".into())
            .load_secret_text(dir.path(), &src)
            .unwrap_err();
        assert!(err.contains("control characters"), "{err}");
        assert!(!err.contains("a\nb"), "{err}");
    }

    const CANARY: &str = "123:canary-secret-value";

    #[test]
    fn debug_and_display_never_print_the_key() {
        let k = ApiKey::new(CANARY).expect("key");
        assert!(!format!("{k:?}").contains("canary"));
        assert!(!format!("{k}").contains("canary"));
        assert!(!format!("{:?}", k.bearer()).contains("canary"));
        assert_eq!(
            k.bearer().to_str().expect("ascii"),
            format!("Bearer {CANARY}")
        );
        assert_eq!(k.fingerprint().len(), 8);
    }

    #[test]
    fn env_source_errors_name_the_variable_only() {
        let env: HashMap<&str, &str> = [("EMPTY", ""), ("SET", CANARY)].into();
        let src = move |n: &str| env.get(n).map(|v| (*v).to_owned());
        let dir = Path::new("/");
        assert_eq!(
            SecretRef::Env("NOPE".into()).load(dir, &src).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert_eq!(
            SecretRef::Env("EMPTY".into()).load(dir, &src).unwrap_err(),
            "environment variable EMPTY is empty"
        );
        assert!(SecretRef::Env("SET".into()).load(dir, &src).is_ok());
    }

    #[test]
    fn file_source_trims_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k"), format!("{CANARY}\n")).expect("write");
        std::fs::write(dir.path().join("crlf"), format!("{CANARY}\r\n")).expect("write");
        std::fs::write(dir.path().join("two"), format!("{CANARY}\n\n")).expect("write");
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let src = |_: &str| None;
        let want = ApiKey::new(CANARY).expect("key");
        for f in ["k", "crlf"] {
            let got = SecretRef::File(f.into()).load(dir.path(), &src).expect(f);
            assert_eq!(got, want, "{f}");
        }
        let err = SecretRef::File("two".into())
            .load(dir.path(), &src)
            .unwrap_err();
        assert!(err.contains("whitespace"), "{err}");
        assert!(!err.contains("canary"), "{err}");
        let err = SecretRef::File("empty".into())
            .load(dir.path(), &src)
            .unwrap_err();
        assert!(err.ends_with("is empty"), "{err}");
        let err = SecretRef::File("missing".into())
            .load(dir.path(), &src)
            .unwrap_err();
        assert!(err.starts_with("cannot read secret file"), "{err}");
    }

    #[test]
    fn secret_values_are_the_key_and_its_secret_part() {
        let k = ApiKey::new(CANARY).expect("key");
        let values: Vec<&[u8]> = k.secret_values().collect();
        assert_eq!(values, [CANARY.as_bytes(), b"canary-secret-value"]);
        let no_colon = ApiKey::new("opaque-token").expect("key");
        assert_eq!(no_colon.secret_values().count(), 1);
    }

    #[test]
    fn redis_url_never_prints_its_password() {
        for (url, shown_prefix) in [
            ("redis://:canary-pw@127.0.0.1:6379/0", "redis://:sha256:"),
            (
                "rediss://app:canary-pw@redis.example:6380",
                "rediss://app:sha256:",
            ),
            (
                "unix:///run/redis.sock?db=1&pass=canary-pw",
                "unix:///run/redis.sock?db=1&pass=sha256:",
            ),
        ] {
            let u = RedisUrl::new(url).expect(url);
            assert_eq!(u.password(), Some("canary-pw"), "{url}");
            assert!(u.shown().starts_with(shown_prefix), "{}", u.shown());
            for printed in [u.shown().to_owned(), format!("{u}"), format!("{u:?}")] {
                assert!(!printed.contains("canary"), "{printed}");
            }
        }
        let plain = RedisUrl::new("redis://127.0.0.1:6379").expect("plain");
        assert_eq!(plain.shown(), "redis://127.0.0.1:6379");
        assert_eq!(plain.password(), None);
        assert!(RedisUrl::new("http://127.0.0.1").is_err());
    }

    #[test]
    fn key_shapes() {
        let own = ApiKey::new("1296121461794938793:abc").expect("key");
        let shop = ApiKey::new("shop1296121461794938793:abc").expect("key");
        assert!(own.looks_like(false) && !own.looks_like(true));
        assert!(shop.looks_like(true) && !shop.looks_like(false));
        assert!(!ApiKey::new("nocolon").expect("key").looks_like(false));
    }
}
