//! `[cluster]`: fleet mode through Redis (see `src/cluster.rs`). The section is optional; without
//! it the gateway keeps everything in its own process.
//!
//! ```toml
//! [cluster]
//! redis_url = { env = "GATEWAY_REDIS_URL" }  # redis://, rediss:// (TLS) or unix://
//! key_prefix = "etelecom-gateway"
//! timeout_ms = 50
//! on_unavailable = "local"                    # or "reject"
//! ```

use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo as _;

use super::{Parser, Section};
use crate::secret::RedisUrl;

pub const DEFAULT_KEY_PREFIX: &str = "etelecom-gateway";
pub const DEFAULT_TIMEOUT_MS: u64 = 50;

/// What a request gets while Redis cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// The in-process limiter and pause, and a short effective cache lifetime.
    Local,
    /// 503 `unavailable` for calls that need the shared limiter (cache hits are still served).
    Reject,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis_url: RedisUrl,
    /// Every Redis key and channel starts with it.
    pub key_prefix: Arc<str>,
    /// One Redis call; past it the call counts as failed.
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
}

/// A key prefix goes into every Redis key: a plain charset, and no `{` `}` (the hash tag of a
/// key must be the bucket's, not the prefix's).
fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl Parser<'_> {
    pub(super) fn cluster(&mut self, mut s: Section) -> Option<ClusterConfig> {
        let present = s.table.contains_key("redis_url");
        let redis_url = s.secret_with(self, "redis_url", |r, dir, src| {
            let text = r.load_text(dir, src)?;
            let url = RedisUrl::new(&text).map_err(|why| format!("{} {why}", r.describe()))?;
            // The client's own message may quote the URL: not used.
            url.expose().into_connection_info().map_err(|_| {
                format!(
                    "{} is not a valid Redis URL (redis://[user:password@]host[:port][/db], rediss://..., unix:///path)",
                    r.describe()
                )
            })?;
            Ok(url)
        });
        if !present {
            self.problem("cluster.redis_url", "is required in [cluster]".into());
        }
        let key_prefix: String = s.take_or(self, "key_prefix", DEFAULT_KEY_PREFIX.to_owned());
        if !valid_prefix(&key_prefix) {
            self.problem(
                "cluster.key_prefix",
                format!("{key_prefix:?} must be 1-64 characters of A-Z a-z 0-9 . _ - :"),
            );
        }
        let timeout = s.millis(self, "timeout_ms", DEFAULT_TIMEOUT_MS);
        if timeout > Duration::from_secs(10) {
            self.problem(
                "cluster.timeout_ms",
                "must be at most 10000 (every request that needs Redis may wait this long)".into(),
            );
        }
        let mode: String = s.take_or(self, "on_unavailable", "local".to_owned());
        let on_unavailable = match mode.as_str() {
            "local" => Some(OnUnavailable::Local),
            "reject" => Some(OnUnavailable::Reject),
            other => {
                self.problem(
                    "cluster.on_unavailable",
                    format!("{other:?} is neither \"local\" nor \"reject\""),
                );
                None
            }
        };
        s.finish(self);
        Some(ClusterConfig {
            redis_url: redis_url?,
            key_prefix: key_prefix.as_str().into(),
            timeout,
            on_unavailable: on_unavailable?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = r#"
[[tenants]]
id = "acme"
api_key = { env = "ACME" }
"#;

    fn parse(cluster: &str, url: Option<&str>) -> Result<Config, Vec<String>> {
        let text = format!("{BASE}\n[cluster]\n{cluster}\n");
        let url = url.map(str::to_owned);
        let env = move |n: &str| match n {
            "ACME" => Some("123:secret".to_owned()),
            "REDIS" => url.clone(),
            _ => None,
        };
        Config::parse(&text, Path::new("/"), &env).map_err(|e| e.problems)
    }

    #[test]
    fn defaults_and_contract_names() {
        let cfg = parse(
            "redis_url = { env = \"REDIS\" }",
            Some("redis://:pw@127.0.0.1:6379/0"),
        )
        .expect("valid");
        let c = cfg.cluster.expect("cluster");
        assert_eq!(&*c.key_prefix, "etelecom-gateway");
        assert_eq!(c.timeout.as_millis(), 50);
        assert_eq!(c.on_unavailable, super::OnUnavailable::Local);
        assert!(parse("", None).is_err());
        let cfg = Config::parse(BASE, Path::new("/"), &|n: &str| {
            (n == "ACME").then(|| "123:secret".to_owned())
        })
        .expect("no cluster");
        assert!(cfg.cluster.is_none());
    }

    #[test]
    fn every_problem_with_its_path_and_never_the_url() {
        let problems = parse(
            "redis_url = { env = \"REDIS\" }\nkey_prefix = \"a{b}\"\ntimeout_ms = 0\non_unavailable = \"maybe\"\nextra = 1",
            Some("http://:canary-pw@host"),
        )
        .unwrap_err();
        let all = problems.join("\n");
        for path in [
            "cluster.redis_url.env:",
            "cluster.key_prefix:",
            "cluster.timeout_ms:",
            "cluster.on_unavailable:",
            "cluster.extra: unknown key",
        ] {
            assert!(all.contains(path), "{path} missing in {all}");
        }
        assert!(!all.contains("canary"), "{all}");
        let problems = parse("key_prefix = \"x\"", None).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p == "cluster.redis_url: is required in [cluster]")
        );
        let problems = parse("redis_url = \"redis://:canary-pw@h\"", None).unwrap_err();
        assert!(
            problems[0].starts_with("cluster.redis_url: must be { env"),
            "{problems:?}"
        );
        assert!(!problems.join("").contains("canary"));
        let problems = parse(
            "redis_url = { env = \"REDIS\" }",
            Some("redis://:canary@[bad"),
        )
        .unwrap_err();
        assert!(
            problems[0].contains("not a valid Redis URL"),
            "{problems:?}"
        );
        assert!(!problems.join("").contains("canary"));
    }
}
