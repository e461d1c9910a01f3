//! A fleet for one test: the mock eTelecom, one `redis-server`, and N gateway processes started
//! from one config with a `[cluster]` section (the Redis URL through `GATEWAY_REDIS_URL`).

use std::path::PathBuf;

use etelecom_gateway::mock::{MockAccounts, MockUpstream};
use tokio::runtime::Runtime;

use crate::common::Setup;
use crate::common::proc::Gateway;
use crate::common::redis::RedisServer;
use crate::support::{Http, config, runtime, start_mock, write_config};

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
