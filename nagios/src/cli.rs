//! Arguments, named as the monitoring-plugins guidelines reserve them
//! (`-H`, `-w`, `-c`, `-t`, `-v`, `-V`, `-h`). `--help` and `--version`
//! answer with exit code 3, as the guidelines ask; every argument error is an
//! UNKNOWN result with the reason.

use crate::check::Outcome;
use clap::Parser;
use ganglion_proto::range::Range;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Check a host, a metric or a cluster through a Ganglion aggregator
/// (http or https).
///
/// Metric mode (`-H host -m metric`): the metric's current value against
/// `-w`/`-c`; UNKNOWN when the metric is missing, not a number, past 4 × its
/// TMAX or older than `--max-age`, or its host is DOWN (the value is then
/// stale). Heartbeat mode
/// (`-H host --heartbeat`): CRITICAL when the host is DOWN (silent for more
/// than 4 × TMAX, gmond's rule), or when the seconds since its last report
/// fall outside `-w`/`-c` or exceed `--max-age`. Cluster mode (`-C` without
/// `-H`): `-m` checks the cluster's summary (sum over its hosts), `--heartbeat`
/// counts DOWN hosts (CRITICAL at any unless `-w`/`-c` say otherwise).
#[derive(Parser, Debug)]
#[command(name = "check_ganglion", version, about, long_about)]
struct Args {
    /// The aggregator's HTTP address (its `[http] listen`), e.g. http://mon:8080.
    #[arg(short = 'u', long = "url", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Cluster name; found by searching when only -H is given.
    #[arg(short = 'C', long = "cluster")]
    cluster: Option<String>,
    /// Host name, exactly as the aggregator shows it.
    #[arg(short = 'H', long = "hostname")]
    hostname: Option<String>,
    /// Metric name, e.g. load_one.
    #[arg(short = 'm', long = "metric")]
    metric: Option<String>,
    /// Warning range (monitoring-plugins syntax: 10, 10:, ~:10, 10:20, @10:20).
    #[arg(short = 'w', long = "warning", allow_hyphen_values = true)]
    warning: Option<String>,
    /// Critical range (checked before the warning range).
    #[arg(short = 'c', long = "critical", allow_hyphen_values = true)]
    critical: Option<String>,
    /// Data older than this many seconds is stale: UNKNOWN for a metric,
    /// CRITICAL in --heartbeat mode.
    #[arg(long = "max-age", value_name = "SECONDS")]
    max_age: Option<u64>,
    /// Check host liveness instead of a metric (replaces check_heartbeat.sh).
    #[arg(long)]
    heartbeat: bool,
    /// Seconds before giving up (UNKNOWN).
    #[arg(
        short = 't',
        long = "timeout",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    timeout: u64,
    /// More output (repeat for more): long lines with the details.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// HTTP basic-auth user (or the environment variable GANGLION_USER).
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the basic-auth password (or the environment
    /// variable GANGLION_PASSWORD); never on the command line, where `ps`
    /// would show it.
    #[arg(long = "password-file", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// For https: the CAs (PEM) the aggregator's certificate must chain to
    /// (default: the system's bundle).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// What a check asks for, validated.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the aggregator.
    pub url: String,
    /// Cluster, when given.
    pub cluster: Option<String>,
    /// Host (exact), when given.
    pub host: Option<String>,
    /// Metric, when given.
    pub metric: Option<String>,
    /// Warning range.
    pub warning: Option<Range>,
    /// Critical range.
    pub critical: Option<Range>,
    /// Staleness bound in seconds.
    pub max_age: Option<u64>,
    /// Liveness mode.
    pub heartbeat: bool,
    /// Overall deadline.
    pub timeout: Duration,
    /// `-v` count.
    pub verbose: u8,
    /// Basic-auth user and password.
    pub auth: Option<(String, String)>,
    /// CA file for https.
    pub ca: Option<PathBuf>,
}

/// Parses the command line (with the program name first). `Err` carries the
/// answer to print: help and version text, or an UNKNOWN naming the problem.
pub fn parse<I, T>(args: I) -> Result<Options, Outcome>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_with_env(args, |k| std::env::var(k).ok())
}

/// [`parse`] with the environment given (tests).
pub fn parse_with_env<I, T>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Options, Outcome>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let a = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            return Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Outcome::plain(e.to_string()),
                _ => {
                    let msg = e.to_string();
                    let first = msg.lines().next().unwrap_or("bad arguments");
                    Outcome::unknown(first.trim_start_matches("error: ").to_string())
                }
            });
        }
    };
    let range = |flag: &str, s: &Option<String>| -> Result<Option<Range>, Outcome> {
        s.as_deref()
            .map(|t| Range::parse(t).map_err(|e| Outcome::unknown(format!("{flag} {t:?}: {e}"))))
            .transpose()
    };
    let warning = range("-w/--warning", &a.warning)?;
    let critical = range("-c/--critical", &a.critical)?;
    if a.hostname.is_none() && a.cluster.is_none() {
        return Err(Outcome::unknown(
            "give -H/--hostname or -C/--cluster".into(),
        ));
    }
    if a.metric.is_none() && !a.heartbeat {
        return Err(Outcome::unknown(
            "give -m/--metric, or --heartbeat for host liveness".into(),
        ));
    }
    if a.metric.is_some() && a.heartbeat {
        return Err(Outcome::unknown(
            "-m/--metric and --heartbeat exclude each other".into(),
        ));
    }
    for (flag, v) in [
        ("-H/--hostname", &a.hostname),
        ("-C/--cluster", &a.cluster),
        ("-m/--metric", &a.metric),
    ] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(Outcome::unknown(format!("{flag} must not be empty")));
        }
    }
    if !(1..=3600).contains(&a.timeout) {
        return Err(Outcome::unknown(
            "-t/--timeout must be between 1 and 3600 seconds".into(),
        ));
    }
    let user = a.user.or_else(|| env("GANGLION_USER"));
    let password = match &a.password_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t.lines().next().unwrap_or("").to_string()),
            Err(e) => {
                return Err(Outcome::unknown(format!(
                    "--password-file {}: {e}",
                    p.display()
                )));
            }
        },
        None => env("GANGLION_PASSWORD"),
    };
    let auth = match (user, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Outcome::unknown(
                "--user needs a password: --password-file or GANGLION_PASSWORD".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Outcome::unknown(
                "a password without a user: give --user or GANGLION_USER".into(),
            ));
        }
    };
    Ok(Options {
        url: a.url,
        cluster: a.cluster,
        host: a.hostname,
        metric: a.metric,
        warning,
        critical,
        max_age: a.max_age,
        heartbeat: a.heartbeat,
        timeout: Duration::from_secs(a.timeout),
        verbose: a.verbose,
        auth,
        ca: a.ca,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ganglion_proto::range::Status;

    fn p(args: &[&str]) -> Result<Options, Outcome> {
        let mut v = vec!["check_ganglion"];
        v.extend_from_slice(args);
        parse_with_env(v, |_| None)
    }

    #[test]
    fn a_metric_check_parses_with_ranges_including_negative_ones() {
        let o = p(&["-H", "n1", "-m", "load_one", "-w", "-5:4", "-c", "@10:20"]).unwrap();
        assert_eq!(o.host.as_deref(), Some("n1"));
        assert_eq!(o.warning.unwrap().to_string(), "-5:4");
        assert_eq!(o.critical.unwrap().to_string(), "@10:20");
        assert_eq!(o.timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_argument_problem_is_unknown_with_the_reason() {
        for (args, says) in [
            (&["-m", "x"][..], "-H/--hostname or -C/--cluster"),
            (&["-H", "n1"][..], "--heartbeat"),
            (&["-H", "n1", "-m", "x", "--heartbeat"][..], "exclude"),
            (&["-H", "n1", "-m", "x", "-w", "10:5"][..], "-w/--warning"),
            (&["-H", "n1", "-m", "x", "-t", "0"][..], "--timeout"),
            (&["-H", "n1", "-m", "x", "--bogus"][..], "--bogus"),
            (&["-H", "", "-m", "x"][..], "must not be empty"),
            (&["-H", "n1", "-m", "x", "--user", "u"][..], "password"),
        ] {
            let o = p(args).unwrap_err();
            assert_eq!(o.status, Status::Unknown, "{args:?}");
            let text = o.render();
            assert!(text.starts_with("GANGLION UNKNOWN - "), "{text}");
            assert!(text.contains(says), "{args:?}: {text}");
        }
    }

    #[test]
    fn help_and_version_exit_unknown_as_the_guidelines_ask() {
        for flag in ["-h", "--help", "-V", "--version"] {
            let o = p(&[flag]).unwrap_err();
            assert_eq!(o.status, Status::Unknown);
            assert!(o.render().contains("check_ganglion"), "{flag}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment_or_a_file() {
        let o = parse_with_env(["c", "-H", "n", "--heartbeat"], |k| {
            Some(format!("{k}-value"))
        })
        .unwrap();
        assert_eq!(
            o.auth,
            Some((
                "GANGLION_USER-value".into(),
                "GANGLION_PASSWORD-value".into()
            ))
        );
        let dir = std::env::temp_dir().join(format!("check-ganglion-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\nignored\n").unwrap();
        let o = p(&[
            "-H",
            "n",
            "--heartbeat",
            "--user",
            "me",
            "--password-file",
            dir.to_str().unwrap(),
        ])
        .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(o.auth, Some(("me".into(), "s3cret".into())));
    }
}
