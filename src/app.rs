//! Running the gateway as a process: bind, serve, stop on a signal. `main.rs` parses the command
//! line and calls in here; tests call [`run`] with their own listener and shutdown future.

use std::future::Future;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::proxy::Gateway;
use crate::server::{self, Limits};

/// Serves `cfg` on `listener` until `shutdown` resolves, then drains.
pub async fn run(
    cfg: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let gateway = Gateway::new(cfg)?;
    for w in &cfg.warnings {
        tracing::warn!(warning = %w, "config");
    }
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        listen = %addr,
        upstream = %format_args!("{}://{}", cfg.upstream.scheme, cfg.upstream.authority),
        tenants = cfg.tenants.len(),
        partner_key = cfg.partner.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "gateway listening"
    );
    let (stop_tasks, stopped) = tokio::sync::watch::channel(());
    let housekeeping = gateway
        .limiter()
        .spawn_housekeeping(cfg.rate_limit.housekeeping_interval, changed(stopped));
    server::serve(listener, gateway, Limits::from(&cfg.server), shutdown).await;
    drop(stop_tasks);
    let _ = housekeeping.await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Resolves when the sender side of `rx` sends or is dropped.
async fn changed(mut rx: tokio::sync::watch::Receiver<()>) {
    let _ = rx.changed().await;
}

/// Binds `cfg.server.listen` and serves until SIGTERM or SIGINT.
pub async fn serve(cfg: &Config) -> Result<(), String> {
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
    run(cfg, listener, shutdown_signal()).await
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
pub async fn shutdown_signal() {
    let first = wait_for_signal().await;
    tracing::info!(signal = first, "shutting down");
    tokio::spawn(async {
        let second = wait_for_signal().await;
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}
