//! A fleet for one test: the mock eTelecom, one `redis-server`, and N gateway processes started
//! from one config with a `[cluster]` section (the Redis URL through `GATEWAY_REDIS_URL`).

use std::path::PathBuf;
use std::time::Duration;

use etelecom_gateway::mock::{MockAccounts, MockUpstream};
use tokio::runtime::Runtime;

use crate::common::Setup;
use crate::common::proc::Gateway;
use crate::common::redis::RedisServer;
use crate::support::{Http, config, fingerprint, poll, runtime, start_mock, write_config};

/// The `[cluster]` section the fleet tests use (the URL from the environment, as documented).
pub fn cluster_section(timeout_ms: u64, on_unavailable: &str) -> String {
    format!(
        "[cluster]\nredis_url = {{ env = \"GATEWAY_REDIS_URL\" }}\nkey_prefix = \"fleet-test\"\ntimeout_ms = {timeout_ms}\non_unavailable = \"{on_unavailable}\"\n"
    )
}

pub struct Fleet {
    pub rt: Runtime,
    pub mock: MockUpstream,
    pub redis: RedisServer,
    pub gateways: Vec<Gateway>,
    pub http: Http,
    pub config: PathBuf,
    /// Holds the config and key files for as long as the fleet runs.
    pub _dir: tempfile::TempDir,
}

impl Fleet {
    /// `n` gateways on one Redis and one mock; `edit` adjusts the config (its `extra` already
    /// holds `[admin]`, `[reload]` and `[cluster]` with a generous 500 ms timeout).
    pub fn start(test: &str, n: usize, edit: impl FnOnce(&mut Setup)) -> Option<Fleet> {
        Self::start_with(test, n, None, |s| {
            s.extra.push_str(&cluster_section(500, "local"));
            edit(s);
        })
    }

    /// [`Fleet::start`] with a Redis password and a free hand over `extra`.
    pub fn start_with(
        test: &str,
        n: usize,
        password: Option<&str>,
        edit: impl FnOnce(&mut Setup),
    ) -> Option<Fleet> {
        let redis = RedisServer::start(test, password)?;
        let rt = runtime();
        let mock = start_mock(&rt, MockAccounts::demo());
        let dir = tempfile::tempdir().unwrap();
        let mut setup = config(&mock, None);
        edit(&mut setup);
        let config = write_config(dir.path(), &setup);
        let mut fleet = Fleet {
            rt,
            mock,
            redis,
            gateways: Vec::new(),
            http: Http::new(),
            config,
            _dir: dir,
        };
        for _ in 0..n {
            fleet.add_gateway();
        }
        Some(fleet)
    }

    /// Starts one more gateway on the fleet's config and Redis.
    pub fn add_gateway(&mut self) -> &mut Gateway {
        let url = self.redis.url();
        let gw = Gateway::start_with(&self.config, &[("GATEWAY_REDIS_URL", &url)]);
        self.gateways.push(gw);
        self.gateways.last_mut().unwrap()
    }
}

impl Fleet {
    /// `/metrics` of gateway `i`.
    pub fn metrics(&self, i: usize) -> String {
        let url = self.gateways[i].admin_url("/metrics");
        self.rt.block_on(self.http.get(&url)).text()
    }

    /// The value of `name{labels}` on gateway `i` (0 when absent).
    pub fn sample(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::common::sample(&self.metrics(i), name, labels).unwrap_or(0.0)
    }

    /// Waits until every gateway has subscribed to the invalidation bus `n` times in all.
    pub fn wait_subscribed(&self, n: f64) {
        for i in 0..self.gateways.len() {
            self.rt.block_on(poll(
                Duration::from_secs(10),
                Duration::from_millis(20),
                "subscribed to the invalidation bus",
                || async {
                    let ok = crate::common::sample(
                        &self
                            .http
                            .get(&self.gateways[i].admin_url("/metrics"))
                            .await
                            .text(),
                        "etelecom_gateway_cluster_requests_total",
                        &[("op", "subscribe"), ("result", "ok")],
                    );
                    ok.filter(|&v| v >= n)
                },
            ));
        }
    }

    /// Every secret the fleet knows (the mock's keys, the SIP passwords it hands out, `extra`)
    /// and the keys' fingerprints: none may appear in any Redis key or value.
    pub fn assert_no_secrets_in_redis(&self, extra: &[&str]) {
        let accounts = MockAccounts::demo();
        let mut secrets: Vec<String> = vec![accounts.partner_key.clone()];
        for s in &accounts.shops {
            secrets.push(s.api_key.clone());
            secrets.push(s.shop_key.clone());
            secrets.push(fingerprint(&s.api_key));
            secrets.push(fingerprint(&s.shop_key));
            secrets.push(format!("mock-sip-pw-{}", s.id));
        }
        secrets.push(fingerprint(&accounts.partner_key));
        secrets.extend(extra.iter().map(|s| (*s).to_owned()));
        let all = self.redis.dump_all();
        for (key, ttl, value) in &all {
            // -2: expired between SCAN and PTTL; -1: no TTL at all.
            assert_ne!(*ttl, -1, "{key} has no TTL");
            for s in &secrets {
                assert!(!key.contains(s.as_str()), "{s} in key {key}");
                let found = value.windows(s.len()).any(|w| w == s.as_bytes());
                assert!(!found, "{s} in the value of {key}");
            }
        }
    }
}
