//! The `etelecom-gateway` command: parses the command line, sets up logging, and hands over to
//! the library. Exit codes: 0 success, 64 invalid configuration, 1 any other failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etelecom_gateway::config::Config;
use etelecom_gateway::logging::{self, LogFormat};
use etelecom_gateway::secret::ProcessEnv;
use etelecom_gateway::{app, demo, mock, probe};

const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "etelecom-gateway",
    version,
    about = "A drop-in eTelecom base URL that injects the right key per tenant"
)]
struct Cli {
    /// Log line format (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML config file.
        #[arg(long, env = "ETELECOM_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config and resolve every secret it names; print every problem (never a secret).
    Check {
        #[arg(long, env = "ETELECOM_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Also ask eTelecom, with each key, one cheap read and report whether it is accepted.
        #[arg(long)]
        probe: bool,
    },
    /// Start the mock eTelecom and the gateway in front of it, with two demo tenants.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run the project's mock eTelecom on its own (tests, demo, benchmarks).
    MockUpstream {
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
    let format = match &cli.command {
        Command::Demo { .. } => LogFormat::Text,
        _ => cli.log_format,
    };
    if let Err(e) = logging::init(format) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    if let Command::Check {
        config,
        probe: false,
    } = &cli.command
    {
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => match Config::load(&config, &ProcessEnv) {
                Ok(cfg) => app::serve(cfg, config)
                    .await
                    .map_err(|e| (ExitCode::FAILURE, e)),
                Err(e) => Err((ExitCode::from(EXIT_BAD_CONFIG), e.to_string())),
            },
            Command::Check { config, .. } => match check(&config) {
                (code, None) => Err((code, String::new())),
                (_, Some(cfg)) => run_probe(&cfg).await,
            },
            Command::Demo { listen } => demo::run(listen).await.map_err(|e| (ExitCode::FAILURE, e)),
            Command::MockUpstream {
                listen,
                tls,
                ca_out,
            } => mock::run_standalone(listen, tls, ca_out, app::shutdown_signal())
                .await
                .map_err(|e| (ExitCode::FAILURE, e.to_string())),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) if msg.is_empty() => code,
        Err((code, msg)) => {
            tracing::error!(error = %msg, "exiting");
            eprintln!("error: {}", msg.trim_end());
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
                "ok: {} is valid ({} tenants, partner key {})",
                path.display(),
                cfg.tenants.len(),
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

/// `check --probe`: one line per key; exit 1 when any key is refused or eTelecom is
/// unreachable.
async fn run_probe(cfg: &Config) -> Result<(), (ExitCode, String)> {
    let results = probe::probe(cfg)
        .await
        .map_err(|e| (ExitCode::FAILURE, e))?;
    for r in &results {
        println!("probe: {r}");
    }
    if results.iter().all(probe::Probe::accepted) {
        Ok(())
    } else {
        Err((ExitCode::FAILURE, String::new()))
    }
}
