//! The `authd` command: parse the command line, load the configuration, run the daemon or
//! one of its tools (the admin commands live in [`authd::cli`]). Errors are printed once,
//! with their causes, and become a non-zero exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use authd::app::{App, Control};
use authd::auth::keys::{self, KeyAlgorithm};
use authd::cli;
use authd::clock::Clock;
use authd::config::Config;

#[derive(Parser)]
#[command(name = "authd", version, about = "A small, fast authentication daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file.
    // Global, so the admin commands take it after their own subcommand too.
    #[arg(
        long,
        env = "AUTHD_CONFIG",
        default_value = "config.toml",
        global = true
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ConfigArg),
    /// Check the configuration (and key files) without starting.
    CheckConfig(ConfigArg),
    /// Write a new signing key into `jwt.keys_dir` and print its kid.
    Keygen {
        #[command(flatten)]
        config: ConfigArg,
        /// HS256, EdDSA, ES256 or RS256 (default: `jwt.algorithm`).
        #[arg(long)]
        alg: Option<String>,
    },
    /// Manage users through the running daemon's admin listener.
    User {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// Revoke a token, a session or every session of a user (running daemon).
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        target: cli::RevokeArgs,
    },
    /// List the revocations in force (running daemon).
    Revocations {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: cli::RevocationsCommand,
    },
    /// Write a backup of the running daemon's store to a file.
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write it (it appears only once whole, readable by its owner only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a backup into the configured store, which must be empty (daemon stopped).
    Restore {
        #[command(flatten)]
        config: ConfigArg,
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// The deployment's live members (running daemon).
    Cluster {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        command: cli::ClusterCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Keygen { config, alg } => keygen(config, alg),
        Command::User { config, command } => load(&config).and_then(|c| cli::user(&c, command)),
        Command::Revoke { config, target } => load(&config).and_then(|c| cli::revoke(&c, target)),
        Command::Revocations { config, command } => {
            load(&config).and_then(|c| cli::revocations(&c, command))
        }
        Command::Backup { config, out } => load(&config).and_then(|c| cli::backup(&c, &out)),
        Command::Restore { config, input } => load(&config).and_then(|c| cli::restore(&c, &input)),
        Command::Cluster { config, command } => {
            load(&config).and_then(|c| cli::cluster(&c, command))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArg) -> anyhow::Result<Config> {
    Config::load(&args.config)
        .with_context(|| format!("invalid configuration {}", args.config.display()))
}

fn serve(args: ConfigArg) -> anyhow::Result<()> {
    let config = load(&args)?;
    authd::logging::init(&config);
    // Before the runtime starts threads: taking passed sockets edits the environment.
    let inherited = authd::activation::inherited_listeners()
        .context("cannot take the sockets passed by systemd")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Handlers first: a signal during start-up is queued, not fatal.
        let (control_tx, control_rx) = tokio::sync::mpsc::channel::<Control>(8);
        let _signals =
            authd::signals::forward(control_tx).context("cannot install signal handlers")?;
        let app = App::build_with(config, inherited).await?;
        tracing::info!(
            public = %app.public_addr()?,
            admin = %app.admin_addr()?,
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        app.run(control_rx).await
    })
}

fn check_config(args: ConfigArg) -> anyhow::Result<()> {
    let config = load(&args)?;
    // Keys are part of the configuration: a broken key file must be reported here too.
    if config.jwt.keys_dir.exists() {
        let loaded = keys::KeySet::load(
            &config.jwt.keys_dir,
            config.jwt.algorithm,
            config.jwt.signing_kid.as_deref(),
        );
        match loaded {
            Ok(_) => {}
            // A fresh install has no key yet: `serve` creates one.
            Err(keys::KeyError::NoKeyForAlgorithm { .. }) if config.jwt.signing_kid.is_none() => {}
            Err(err) => return Err(err).context("invalid key set"),
        }
    }
    // So is the second factor's key (a fresh install has none yet: `serve` creates it).
    if config.mfa.key_file.exists() {
        authd::auth::mfa::MfaKey::read(&config.mfa.key_file)?;
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    println!("{}: configuration is valid", config.file.display());
    Ok(())
}

fn keygen(args: ConfigArg, alg: Option<String>) -> anyhow::Result<()> {
    let config = load(&args)?;
    let algorithm = match alg {
        Some(name) => KeyAlgorithm::parse(&name).with_context(|| {
            format!("unknown algorithm {name:?}: use HS256, EdDSA, ES256 or RS256")
        })?,
        None => config.jwt.algorithm,
    };
    let kid = keys::generate_key(
        &config.jwt.keys_dir,
        algorithm,
        Clock::system().system_time(),
    )?;
    println!("{kid}");
    Ok(())
}
