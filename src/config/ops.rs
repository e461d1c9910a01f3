//! The operations sections: `[admin]`, `[shutdown]`, `[reload]` and `[metrics]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Parser, Section};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/cache/purge`, `/config`).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// `/readyz` answers 503 this long before the listener closes.
    pub drain_delay: Duration,
    /// In-flight requests get this long to finish once the listener has closed.
    pub grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Periodic re-read, the fallback to file watching.
    pub interval: Duration,
    /// Watch the config file's and the secret files' folders for changes.
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `false` collapses the tenant label to `all` (very large fleets).
    pub tenant_label: bool,
}

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

impl Parser<'_> {
    pub(super) fn admin(&mut self, mut s: Section) -> Option<AdminConfig> {
        let listen: String = s.take_or(self, "listen", DEFAULT_ADMIN_LISTEN.to_owned());
        s.finish(self);
        match listen.parse() {
            Ok(listen) => Some(AdminConfig { listen }),
            Err(_) => {
                self.problem("admin.listen", format!("{listen:?} is not an address:port"));
                None
            }
        }
    }

    pub(super) fn shutdown(&mut self, mut s: Section) -> Option<ShutdownConfig> {
        let drain_delay = Duration::from_secs(s.take_or(self, "drain_delay_secs", 5));
        let grace: u64 = s.take_or(self, "grace_secs", 25);
        if grace == 0 {
            self.problem("shutdown.grace_secs", "must be greater than 0".into());
        }
        s.finish(self);
        Some(ShutdownConfig {
            drain_delay,
            grace: Duration::from_secs(grace),
        })
    }

    pub(super) fn reload(&mut self, mut s: Section) -> Option<ReloadConfig> {
        let interval: u64 = s.take_or(self, "interval_secs", 30);
        if interval == 0 {
            self.problem("reload.interval_secs", "must be greater than 0".into());
        }
        let watch = s.take_or(self, "watch", true);
        s.finish(self);
        Some(ReloadConfig {
            interval: Duration::from_secs(interval),
            watch,
        })
    }

    pub(super) fn metrics(&mut self, mut s: Section) -> Option<MetricsConfig> {
        let tenant_label = s.take_or(self, "tenant_label", true);
        s.finish(self);
        Some(MetricsConfig { tenant_label })
    }
}
