//! `ganglion-aggregator` binary: CLI glue only.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ganglion_aggregator::config::{self, Config};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Ganglion aggregator — a drop-in for a collector gmond plus gmetad.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short, long, conflicts_with = "local")]
    config: Option<PathBuf>,
    /// Use the embedded local config: localhost ports, data under ./var/.
    #[arg(long)]
    local: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the default configuration (every key, with Ganglia's defaults) and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the aggregator TOML equivalent to a gmetad.conf (settings with no
    /// equivalent become comments); fails only when the file cannot be read.
    Import {
        /// gmetad's configuration file, e.g. /etc/ganglia/gmetad.conf.
        file: PathBuf,
    },
    /// Print Nagios object definitions (check_ganglion commands, a passive
    /// host per Ganglia host, a passive service per [[alert]] rule and host,
    /// freshness checks) for the hosts a running aggregator knows.
    NagiosConfig {
        /// The aggregator's URL, for reading its hosts and for the
        /// check_ganglion commands (default: from [http] listen).
        #[arg(long)]
        url: Option<String>,
        /// Where Nagios finds check_ganglion and check_dummy.
        #[arg(long, default_value = "/usr/lib/nagios/plugins")]
        plugin_dir: String,
        /// Contacts to name in the host and service templates (comma separated).
        #[arg(long, value_delimiter = ',')]
        contacts: Vec<String>,
        /// For an https aggregator: the CAs (PEM) its certificate chains to,
        /// used here and passed to check_ganglion (default: the system's).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Import { file }) = &cli.command {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        // gmetad.conf is usually ASCII; a stray Latin-1 byte must not stop the import.
        let text = String::from_utf8_lossy(&text);
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let out = ganglion_aggregator::import::gmetad_conf(&text, &host);
        print!("{}", out.toml);
        if out.unmapped > 0 {
            eprintln!(
                "{} setting(s) with no equivalent are kept as comments at the end",
                out.unmapped
            );
        }
        return Ok(());
    }
    if let Some(Cmd::NagiosConfig {
        url,
        plugin_dir,
        contacts,
        ca,
    }) = &cli.command
    {
        let config = match (&cli.config, cli.local) {
            (Some(p), _) => Config::load(p)?,
            (None, true) => Config::from_toml(config::LOCAL_CONFIG_TOML)?,
            (None, false) => {
                anyhow::bail!("give --config FILE (for the rules and the HTTP address)")
            }
        };
        print!(
            "{}",
            ganglion_aggregator::nagios::objects::for_config(
                &config,
                url.as_deref(),
                plugin_dir,
                contacts,
                ca.as_deref(),
            )?
        );
        return Ok(());
    }
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG_TOML);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // One event, one line, whatever names from the network it quotes.
        .fmt_fields(ganglion_aggregator::diag::one_line_fields())
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (the reader of a pipe gone, e.g. `| tee` stopped
        // by the same Ctrl-C) must not matter: by default the subscriber
        // reports a failed write with eprintln!, which panics the logging
        // thread — including the one handling the shutdown signal.
        .log_internal_errors(false)
        .init();
    let config = match (&cli.config, cli.local) {
        (Some(p), _) => Config::load(p)?,
        (None, true) => Config::from_toml(config::LOCAL_CONFIG_TOML)?,
        (None, false) => anyhow::bail!("give --config FILE, or --local for a localhost setup"),
    };
    if cli.check_config {
        // The descriptor budget too: the caps must fit the (raised) limit
        // this process would run with.
        let limit = ganglion_aggregator::listen::raise_nofile();
        let needed = ganglion_aggregator::listen::check_fd_budget(&config.fd_budget(), limit)
            .map_err(anyhow::Error::msg)?;
        // Key files of clusters with auth on, as start loads them (errors
        // name `cluster[i].key_files`).
        ganglion_aggregator::auth::Registry::new(&config)?;
        println!("configuration OK ({needed} of {limit} file descriptors budgeted)");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = ganglion_aggregator::start(config, shutdown.clone()).await?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let sd = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            sd.cancel();
            tracing::info!("shutting down");
        });
        running.wait().await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
