//! The `etelecom-gateway` command: parses the command line, installs the signal handlers (before
//! anything is bound or logged), sets up logging, and hands over to the library. Exit codes: 0
//! success, 1 any other failure, 64 invalid configuration, 130 a second SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etelecom_gateway::config::{Config, plural};
use etelecom_gateway::logging::{self, LogFormat};
use etelecom_gateway::secret::ProcessEnv;
use etelecom_gateway::signals::Signals;
use etelecom_gateway::{app, demo, mock, probe};

const EXIT_BAD_CONFIG: u8 = 64;

const EXIT_CODES: &str = "\
Exit codes:
  0    success (serve, demo, mock-upstream: stopped by SIGTERM or SIGINT after draining)
  1    failure (e.g. a port cannot be bound; check --probe: a key refused or eTelecom unreachable)
  64   invalid configuration (every problem is listed with its key path)
  130  a second SIGTERM or SIGINT while draining: exited at once";

#[derive(Parser)]
#[command(
    name = "etelecom-gateway",
    version,
    about = "A drop-in eTelecom base URL that injects the right key per tenant",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log line format on stderr (level from RUST_LOG, default info) [default: json; text for
    /// demo].
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (SIGTERM/SIGINT drain and stop it, SIGHUP reloads the config).
    #[command(after_help = EXIT_CODES)]
    Serve {
        /// The TOML config file (see config/gateway.example.toml).
        #[arg(long, env = "ETELECOM_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config and resolve every secret it names; print every problem (never a secret).
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The TOML config file to validate (see config/gateway.example.toml).
        #[arg(long, env = "ETELECOM_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Also ask eTelecom, with each key, one cheap read and report whether it is accepted.
        #[arg(long)]
        probe: bool,
    },
    /// Start the mock eTelecom and the gateway in front of it, with two demo tenants.
    #[command(after_help = EXIT_CODES)]
    Demo {
        /// Where the gateway listens (loopback; port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Also serve the admin endpoints (/metrics, /config, /readyz, /cache/purge) here, e.g.
        /// 127.0.0.1:9090.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Run the project's mock eTelecom on its own (tests, demo, benchmarks). It accepts only the
    /// demo keys (README: "Serve in front of the mock" lists them).
    #[command(after_help = EXIT_CODES)]
    MockUpstream {
        /// Where the mock listens, e.g. 127.0.0.1:9443 (port 0 picks a free port; the bound
        /// address is logged).
        #[arg(long)]
        listen: SocketAddr,
        /// Serve TLS with a throwaway CA generated at start.
        #[arg(long)]
        tls: bool,
        /// Where to write that CA's certificate (PEM), for the gateway's `upstream.ca_file`.
        #[arg(long, requires = "tls")]
        ca_out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.unwrap_or(match cli.command {
        Command::Demo { .. } => LogFormat::Text,
        _ => LogFormat::Json,
    });
    if let Command::Check {
        config,
        probe: false,
    } = &cli.command
    {
        if let Err(e) = logging::init(format) {
            eprintln!("cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
        return check(config).0;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The long-running commands take their signals from here on, before anything is bound or
    // logged; `check --probe` keeps the default actions (Ctrl-C stops it at once).
    let signals = match &cli.command {
        Command::Check { .. } => None,
        _ => match runtime.block_on(async { Signals::install() }) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("cannot install the signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = logging::init(format) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    // Batched access lines go out however `main` ends (return or unwinding panic).
    let _flush = logging::FlushGuard::new();
    let result = runtime.block_on(async {
        match (cli.command, signals) {
            (Command::Check { config, .. }, _) => match check(&config) {
                (code, None) => Err((code, String::new())),
                (_, Some(cfg)) => run_probe(&cfg).await,
            },
            (_, None) => Err((ExitCode::FAILURE, "no signal handlers".to_owned())),
            (Command::Serve { config }, Some(signals)) => {
                match Config::load(&config, &ProcessEnv) {
                    Ok(cfg) => app::serve(cfg, config, signals)
                        .await
                        .map_err(|e| (ExitCode::FAILURE, e)),
                    Err(e) => Err((ExitCode::from(EXIT_BAD_CONFIG), e.to_string())),
                }
            }
            (Command::Demo { listen, admin }, Some(signals)) => demo::run(listen, admin, signals)
                .await
                .map_err(|e| (ExitCode::FAILURE, e)),
            (
                Command::MockUpstream {
                    listen,
                    tls,
                    ca_out,
                },
                Some(signals),
            ) => mock::run_standalone(listen, tls, ca_out, signals.shutdown(|| {}))
                .await
                .map_err(|e| (ExitCode::FAILURE, e.to_string())),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) if msg.is_empty() => code,
        Err((code, msg)) => {
            // Once: a JSON log line for machines, a plain `error:` line for people.
            match format {
                LogFormat::Json => tracing::error!(error = %msg.trim_end(), "exiting"),
                LogFormat::Text => eprintln!("error: {}", msg.trim_end()),
            }
            code
        }
    }
}

/// Validates the config; prints every problem or a summary.
fn check(path: &std::path::Path) -> (ExitCode, Option<Config>) {
    match Config::load(path, &ProcessEnv) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} is valid ({}, partner key {})",
                path.display(),
                plural(cfg.tenants.len(), "tenant"),
                if cfg.partner.is_some() {
                    "configured"
                } else {
                    "not configured"
                }
            );
            (ExitCode::SUCCESS, Some(cfg))
        }
        Err(e) => {
            print!("{e}");
            (ExitCode::from(EXIT_BAD_CONFIG), None)
        }
    }
}

/// `check --probe`: one line per key (and one for Redis with `[cluster]`); exit 1 when any key
/// is refused, eTelecom is unreachable or Redis does not answer.
async fn run_probe(cfg: &Config) -> Result<(), (ExitCode, String)> {
    let results = probe::probe(cfg)
        .await
        .map_err(|e| (ExitCode::FAILURE, e))?;
    for r in &results {
        println!("probe: {r}");
    }
    let redis_ok = match probe::probe_cluster(cfg).await {
        None => true,
        Some(Ok(line)) => {
            println!("probe: {line}");
            true
        }
        Some(Err(line)) => {
            println!("probe: {line}");
            false
        }
    };
    if redis_ok && results.iter().all(probe::Probe::accepted) {
        Ok(())
    } else {
        Err((ExitCode::FAILURE, String::new()))
    }
}
