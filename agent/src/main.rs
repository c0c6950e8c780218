//! `ganglion-agent` binary: CLI glue only.

use clap::{Parser, Subcommand};
use ganglion_agent::config::{AgentConfig, DEFAULT_GROUPS_TOML};
use ganglion_agent::gmetric::{self, SendArgs};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Ganglion agent — a drop-in gmond sender; `send` replaces gmetric.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Destination HOST:PORT (repeatable), in addition to the config's [[send]].
    #[arg(long = "send-to", value_name = "HOST:PORT")]
    send_to: Vec<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Print an example configuration and gmond's default collection groups, then exit.
    #[arg(long)]
    print_default_config: bool,
    /// Collect every metric once, print name = value, and exit.
    #[arg(long)]
    once: bool,
    /// Key file: send every datagram authenticated (overrides the config's
    /// `key_file`; for the daemon and for `send`).
    #[arg(long = "key-file", value_name = "FILE", global = true)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once from the command line; boxing buys nothing"
)]
enum Command {
    /// Send one metric, like gmetric.
    Send(SendArgs),
    /// Print the agent TOML equivalent to a gmond.conf (includes followed;
    /// settings with no equivalent become comments); fails only when the file
    /// cannot be read.
    Import {
        /// gmond's configuration file, e.g. /etc/ganglia/gmond.conf.
        file: PathBuf,
    },
    /// Write a new random key file (mode 0600) for the authenticated transport.
    Keygen {
        /// Key id (0–65535), never reused across rotations.
        #[arg(long)]
        id: u16,
        /// File to create (an existing file is never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// chacha20-poly1305 (default) or aes-256-gcm.
        #[arg(long, default_value = "chacha20-poly1305")]
        alg: String,
        /// Encrypt payloads too (default: authenticate only).
        #[arg(long)]
        encrypt: bool,
        /// A fixed sender id for the agent using this file (default: a hash
        /// of its host name).
        #[arg(long)]
        sender_id: Option<u32>,
    },
}

fn load(path: &Option<PathBuf>) -> Result<AgentConfig, String> {
    match path {
        Some(p) => AgentConfig::load(p).map_err(|e| e.to_string()),
        None => Ok(AgentConfig::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Import { file }) = &cli.command {
        return match ganglion_agent::import::gmond_conf_file(file) {
            Ok(out) => {
                print!("{}", out.toml);
                if out.unmapped > 0 {
                    eprintln!(
                        "{} setting(s) with no equivalent are kept as comments at the end",
                        out.unmapped
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ganglion-agent: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::Keygen {
        id,
        out,
        alg,
        encrypt,
        sender_id,
    }) = &cli.command
    {
        let Some(alg) = ganglion_proto::envelope::Alg::from_name(alg) else {
            eprintln!("ganglion-agent: --alg must be chacha20-poly1305 or aes-256-gcm");
            return ExitCode::from(1);
        };
        return match ganglion_agent::keys::keygen(*id, alg, *encrypt, *sender_id, out) {
            Ok(()) => {
                println!("wrote key {id} ({}) to {}", alg.name(), out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ganglion-agent: keygen: {e}");
                ExitCode::from(1)
            }
        };
    }
    if cli.print_default_config {
        print!(
            "{}\n{}",
            include_str!("../examples/agent.toml"),
            DEFAULT_GROUPS_TOML
        );
        return ExitCode::SUCCESS;
    }
    // RUST_LOG takes `level` and `target=level` directives, comma-separated.
    // Span and field filters (EnvFilter) are not supported: EnvFilter brings a
    // regex engine, a large share of the binary and so of the daemon's RSS.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not panic the thread that logs (see the
        // aggregator's main).
        .log_internal_errors(false)
        .finish()
        .with(filter)
        .init();
    let config = match load(&cli.config) {
        Ok(mut c) => {
            if let Some(k) = &cli.key_file {
                c.key_file = Some(k.clone());
            }
            c
        }
        Err(e) => {
            eprintln!("ganglion-agent: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Send(args)) = &cli.command {
        let mut dests = Vec::new();
        let targets: Vec<String> = if args.send_to.is_empty() {
            config
                .send
                .iter()
                .map(|s| format!("{}:{}", s.host, s.port))
                .collect()
        } else {
            args.send_to.clone()
        };
        for t in &targets {
            match gmetric::parse_dest(t) {
                Ok(a) => dests.extend(a.into_iter().take(1)),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            }
        }
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut args = args.clone();
        if args.spoof.is_none()
            && !args.heartbeat
            && let Some(name) = &config.override_hostname
        {
            // gmetric turns override_hostname into a spoof, as gmond does.
            args.spoof = Some(format!(
                "{}:{name}",
                config.override_ip.as_deref().unwrap_or(name)
            ));
        }
        let sealer = match &config.key_file {
            None => None,
            Some(p) => match ganglion_agent::keys::read(p)
                .and_then(|kf| ganglion_agent::keys::Sealer::oneshot(&kf, &host))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("ganglion-agent: key file: {e}");
                    return ExitCode::from(1);
                }
            },
        };
        return match gmetric::send_sealed(&args, dests, &host, sealer) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    if cli.check_config {
        if let Some(p) = &config.key_file
            && let Err(e) = ganglion_agent::keys::read(p)
        {
            eprintln!("ganglion-agent: key_file: {e}");
            return ExitCode::from(1);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if cli.once {
        let mut all: Vec<_> = ganglion_agent::schedule::collect_all(&config)
            .into_iter()
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, v) in all {
            match v {
                Ok(v) => {
                    let fmt = ganglion_agent::metrics::find(&name).map_or("%s", |d| d.fmt);
                    println!("{name} = {}", ganglion_proto::format::render(fmt, &v));
                }
                Err(e) => println!("{name} ! {e}"),
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut extra = Vec::new();
    for t in &cli.send_to {
        match gmetric::parse_dest(t) {
            Ok(a) => extra.extend(a.into_iter().take(1)),
            Err(e) => {
                eprintln!("ganglion-agent: --send-to: {e}");
                return ExitCode::from(1);
            }
        }
    }
    // SIGTERM and SIGINT stop the agent cleanly, SIGHUP re-reads key_file:
    // blocked, they queue on a signalfd that the scheduler waits on with its
    // sockets (one thread, no handler, no async runtime).
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGHUP);
    let signals = match stop
        .thread_block()
        .and_then(|()| SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK))
    {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("ganglion-agent: signals: {e}");
            return ExitCode::from(1);
        }
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let result = ganglion_agent::run(config, extra, signals.as_fd());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ganglion-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}
