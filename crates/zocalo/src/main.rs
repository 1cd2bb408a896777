//! `zocalo`: the one executable of the platform.
//!
//! - `zocalo up` runs every service in one process: each on its own loopback
//!   port, the gateway in front on `:8080`, SQLite files under `./data`;
//! - `zocalo serve <service>` runs one service (a container, a pod);
//! - `zocalo migrate [<service>]` applies migrations and exits;
//! - `zocalo admin …` runs one-off tasks: rebuild a read model (`admin
//!   rebuild cinema-query`), a development certificate, a health probe for
//!   containers.
//!
//! This crate only parses the command line and wires services together; all
//! behaviour lives in the service and platform crates.

mod admin;
mod live;
mod settings;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::Settings;

/// Allocation was about a sixth of the CPU of a proxied read with the system
/// allocator (bench/results.md); mimalloc's thread-local free lists cut it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "zocalo",
    version,
    about = "Zócalo: reviews, gateway and auth in one binary"
)]
struct Cli {
    /// A TOML settings file; `ZOCALO_…` environment variables override it.
    #[arg(long, global = true, env = "ZOCALO_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole stack in this process (embedded mode).
    Up {
        /// Gateway port on 127.0.0.1.
        #[arg(long)]
        port: Option<u16>,
        /// Where the SQLite files live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run one service.
    Serve { service: Service },
    /// Run only the job consumers of one service (e.g. `worker orders`).
    Worker { service: Service },
    /// Apply migrations of one service, or of all, and exit.
    Migrate { service: Option<Service> },
    /// One-off administration tasks.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Gateway,
    Auth,
    Reviews,
    Catalog,
    Orders,
    CinemaCommand,
    Web,
    CinemaQuery,
    Media,
}

impl Service {
    /// The name it has on the command line, in discovery and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Auth => "auth",
            Self::Reviews => "reviews",
            Self::Catalog => "catalog",
            Self::Orders => "orders",
            Self::CinemaCommand => "cinema-command",
            Self::Web => "web",
            Self::CinemaQuery => "cinema-query",
            Self::Media => "media",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("zocalo: {error}");
            return ExitCode::from(zocalo_config::EXIT_CONFIG as u8);
        }
    };
    if let Command::Up { port, data_dir } = &cli.command {
        settings.apply_up_flags(*port, data_dir.clone());
    }
    settings.use_data_dir();
    zocalo_telemetry::init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("zocalo: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, settings));
    // Outside the runtime: flushing blocks until the last spans are sent.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    zocalo_telemetry::shutdown_tracing();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "zocalo stopped with an error");
            eprintln!("zocalo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Up { .. } => up::run(settings).await,
        Command::Serve { service } => up::serve(service, settings).await,
        Command::Migrate { service } => up::migrate(service, settings).await,
        Command::Worker { service } => up::worker(service, settings).await,
        Command::Admin { command } => admin::run(command, settings).await,
    }
}
