//! Running the gateway as a process: the public and admin listeners, the background tasks
//! (config reload, rate-limit housekeeping, fleet mode's Redis probe and invalidation
//! subscriber) and the shutdown sequence. `main.rs` parses the
//! command line and calls in here; tests call [`run`] with their own listeners and shutdown.
//!
//! Shutdown: when `shutdown` resolves, `/readyz` turns 503 at once; after
//! `[shutdown] drain_delay_secs` (so Kubernetes removes the endpoint) the public listener
//! closes and new connections are refused; in-flight requests get `grace_secs` to finish;
//! then the admin listener and the background tasks stop and `run` returns.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, Health};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Reloaded};
use crate::reload::ReloadTriggers;
use crate::secret::ProcessEnv;
use crate::server::{self, Handler, Limits};
use crate::signals::{Hangup, Signals};

/// How long a burst of file events is coalesced into one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);
/// How often fleet mode PINGs Redis (and so how soon after Redis returns fleet mode resumes).
const CLUSTER_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// What a run needs besides the config and the public listener.
#[derive(Default)]
pub struct Options {
    /// The admin listener; none in tests that do not need it.
    pub admin: Option<TcpListener>,
    /// Where the config came from: reloads re-read it. `None`: no reloads.
    pub config_path: Option<PathBuf>,
    /// SIGHUP's receiver, installed before the listeners were bound (reloads only); `None`:
    /// the reload triggers install their own.
    pub hangup: Option<Hangup>,
}

/// Serves `cfg` on `listener` until `shutdown` resolves, then drains (no admin listener, no
/// reloads).
pub async fn run(
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    run_with(cfg.clone(), listener, Options::default(), shutdown).await
}

/// Serves `cfg` on `listener` (and `opts.admin`) until `shutdown` resolves, then drains.
pub async fn run_with(
    cfg: Config,
    listener: TcpListener,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new(cfg.metrics.tenant_label));
    let gateway = Gateway::new(cfg.clone(), metrics.clone())?;
    metrics.config_reload("success", SystemTime::now());
    for w in &cfg.warnings {
        tracing::warn!(warning = %w, "config");
    }
    let health = Health::default();
    let (stop_tasks, stopped) = watch::channel(());

    let mut tasks = Vec::new();
    let admin_addr = match opts.admin {
        Some(l) => {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            let admin = Admin::new(gateway.clone(), health.clone());
            let limits = Limits {
                max_connections: 64,
                ..Limits::from(&cfg)
            };
            tasks.push(tokio::spawn(server::serve(
                l,
                admin,
                limits,
                changed(stopped.clone()),
            )));
            Some(addr)
        }
        None => None,
    };
    tasks.push(tokio::spawn(housekeeping(
        gateway.clone(),
        cfg.rate_limit.housekeeping_interval,
        changed(stopped.clone()),
    )));
    tasks.push(tokio::spawn(cluster_probe(
        gateway.clone(),
        changed(stopped.clone()),
    )));
    tasks.push(tokio::spawn(crate::cluster::bus::subscriber(
        gateway.clone(),
        changed(stopped.clone()),
    )));
    if let Some(path) = opts.config_path {
        tasks.push(tokio::spawn(reload_loop(
            path,
            opts.hangup,
            cfg.clone(),
            gateway.clone(),
            changed(stopped.clone()),
        )));
    }

    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        listen = %addr,
        admin = %admin_addr.map_or("-".to_owned(), |a| a.to_string()),
        upstream = %format_args!("{}://{}", cfg.upstream.scheme, cfg.upstream.authority),
        tenants = cfg.tenants.len(),
        partner_key = cfg.partner.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "gateway listening"
    );
    let drain_delay = cfg.shutdown.drain_delay;
    let drain = async {
        shutdown.await;
        health.start_draining();
        let (drain_delay_ms, grace_ms) = (
            drain_delay.as_millis() as u64,
            cfg.shutdown.grace.as_millis() as u64,
        );
        if admin_addr.is_some() {
            tracing::info!(
                drain_delay_ms,
                grace_ms,
                "draining: /readyz is 503; the listener closes after the drain delay"
            );
        } else {
            tracing::info!(
                drain_delay_ms,
                grace_ms,
                "draining: the listener closes after the drain delay"
            );
        }
        tokio::time::sleep(drain_delay).await;
    };
    server::serve(listener, gateway, Limits::from(&cfg), drain).await;
    drop(stop_tasks);
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

impl Handler for Gateway {
    type Connection = crate::metrics::GaugeGuard;

    fn connection(&self) -> Self::Connection {
        self.metrics().connection()
    }

    fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> impl Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>> + Send {
        self.handle(req, peer)
    }
}

/// Binds the public and admin listeners of `cfg` and serves until SIGTERM or SIGINT; reloads
/// from `path` (and on SIGHUP). `signals` were installed before anything else, so a signal sent
/// while the process starts is acted on once it serves.
pub async fn serve(cfg: Config, path: PathBuf, mut signals: Signals) -> Result<(), String> {
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let listener = bind(cfg.server.listen).await?;
    let admin = bind(cfg.admin.listen).await?;
    let opts = Options {
        admin: Some(admin),
        config_path: Some(path),
        hangup: signals.take_hangup(),
    };
    run_with(cfg, listener, opts, signals.shutdown(|| {})).await
}

/// Periodic housekeeping until `stop`.
async fn housekeeping(gateway: Gateway, every: Duration, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => gateway.housekeeping(),
        }
    }
}

/// Fleet mode's background probe until `stop`: a PING every [`CLUSTER_PROBE_INTERVAL`] keeps
/// `cluster_up` true to Redis and closes the circuit once Redis answers again (requests do not
/// call Redis while it is open). Without `[cluster]` a tick does nothing.
async fn cluster_probe(gateway: Gateway, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval(CLUSTER_PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => gateway.cluster_probe().await,
        }
    }
}

/// Re-reads the config on SIGHUP, on a change of the config file or of a file it names, and
/// every `[reload] interval_secs`. A config that fails validation is refused: the running one
/// stays.
async fn reload_loop(
    path: PathBuf,
    hangup: Option<Hangup>,
    initial: Config,
    gateway: Gateway,
    stop: impl Future<Output = ()>,
) {
    let watched = |c: &Config| {
        if c.reload.watch {
            c.files.clone()
        } else {
            Vec::new()
        }
    };
    let (files, every) = (watched(&initial), initial.reload.interval);
    let started = match hangup {
        Some(h) => Ok(ReloadTriggers::with_hangup(
            &files,
            every,
            RELOAD_DEBOUNCE,
            h,
        )),
        None => ReloadTriggers::start(&files, every, RELOAD_DEBOUNCE),
    };
    let mut triggers = match started {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch for config changes; reloads are off");
            return;
        }
    };
    let metrics = gateway.metrics().clone();
    let mut stop = std::pin::pin!(stop);
    loop {
        let trigger = tokio::select! {
            t = triggers.next() => t,
            () = &mut stop => break,
        };
        let result = Config::load(&path, &ProcessEnv)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                let files = watched(&cfg);
                gateway.reload(cfg).map(|r| (r, files))
            });
        match result {
            Ok((Reloaded::Applied, files)) => {
                tracing::info!(trigger = ?trigger, "config reloaded");
                metrics.config_reload("success", SystemTime::now());
                triggers.watch(&files);
            }
            Ok((Reloaded::Unchanged, _)) => {
                tracing::debug!(trigger = ?trigger, "config unchanged");
                metrics.config_reload("unchanged", SystemTime::now());
            }
            Err(problems) => {
                tracing::error!(
                    trigger = ?trigger,
                    problems = %problems.trim_end(),
                    "config reload refused; the running config stays"
                );
                metrics.config_reload("failure", SystemTime::now());
            }
        }
    }
}

/// Resolves when the sender side of `rx` sends or is dropped.
async fn changed(mut rx: watch::Receiver<()>) {
    let _ = rx.changed().await;
}
