//! `[[script]]`: runs an argv every `interval_secs` (no shell unless the argv
//! names one), kills it at `timeout_secs`, and sends what it printed.
//!
//! Output, one metric per line, either
//!
//! - `name value [type] [units…]` — type defaults to `double` when the value
//!   is a number and `string` otherwise; units may contain spaces; or
//! - a JSON object `{"name": …, "value": …, "type": …, "units": …,
//!   "group": …, "title": …, "desc": …, "slope": …, "tmax": …}` (name and
//!   value required).
//!
//! Blank lines and lines starting with `#` are skipped. A line that cannot be
//! read is logged (with its number) and the rest still go out. Stdout is
//! read up to 64 KiB, stderr up to 8 KiB (logged).

use super::{Emitter, Reading, Stopper, TYPES, capped_reader, kill_group, log_stderr, spawn_group};
use crate::config::ScriptConfig;
use std::time::{Duration, Instant};

const STDOUT_CAP: usize = 64 << 10;
const STDERR_CAP: usize = 8 << 10;

/// Parses a script's output; errors carry the line number.
pub fn parse_output(out: &str, defaults: &ScriptConfig) -> (Vec<Reading>, Vec<String>) {
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in out.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r = if line.starts_with('{') {
            parse_json(line, defaults)
        } else {
            parse_words(line, defaults)
        };
        match r {
            Ok(r) => readings.push(r),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    (readings, errors)
}

fn base(name: String, value: String, type_name: Option<String>, s: &ScriptConfig) -> Reading {
    let type_name = type_name.unwrap_or_else(|| {
        if value.trim().parse::<f64>().is_ok() {
            "double".into()
        } else {
            "string".into()
        }
    });
    Reading {
        name,
        value,
        type_name,
        units: String::new(),
        slope: "both".into(),
        tmax: s.interval_secs.saturating_mul(2).max(60),
        group: s.group.clone(),
        desc: None,
        title: None,
    }
}

fn check(r: Reading) -> Result<Reading, String> {
    if r.name.is_empty() {
        return Err("empty name".into());
    }
    if !TYPES.contains(&r.type_name.as_str()) {
        return Err(format!(
            "type {:?} is not one of {}",
            r.type_name,
            TYPES.join(", ")
        ));
    }
    if r.type_name != "string" && r.value.trim().parse::<f64>().is_err() {
        return Err(format!(
            "value {:?} of {} is not a number",
            r.value, r.type_name
        ));
    }
    Ok(r)
}

fn parse_words(line: &str, s: &ScriptConfig) -> Result<Reading, String> {
    let mut it = line.split_whitespace();
    let (Some(name), Some(value)) = (it.next(), it.next()) else {
        return Err("expected `name value [type] [units]`".into());
    };
    let type_name = it.next().map(str::to_string);
    let units: Vec<&str> = it.collect();
    let mut r = base(name.into(), value.into(), type_name, s);
    r.units = units.join(" ");
    check(r)
}

fn parse_json(line: &str, s: &ScriptConfig) -> Result<Reading, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("JSON: {e}"))?;
    let text = |k: &str| -> Option<String> {
        match v.get(k)? {
            serde_json::Value::String(t) => Some(t.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let name = text("name").ok_or("no \"name\"")?;
    let value = text("value").ok_or("no \"value\" (a string or a number)")?;
    let mut r = base(name, value, text("type"), s);
    if let Some(u) = text("units") {
        r.units = u;
    }
    if let Some(g) = text("group") {
        r.group = g;
    }
    if let Some(sl) = text("slope") {
        r.slope = sl;
    }
    if let Some(t) = v.get("tmax").and_then(serde_json::Value::as_u64) {
        r.tmax = u32::try_from(t).unwrap_or(u32::MAX);
    }
    r.title = text("title");
    r.desc = text("desc");
    check(r)
}

/// What one run of the script produced.
pub enum Outcome {
    /// Exited (status code, or None when killed by a signal).
    Exited(Option<i32>),
    /// Killed at the timeout.
    TimedOut,
    /// Could not be started.
    SpawnFailed(String),
}

/// Runs the script once: (outcome, stdout, stderr).
pub fn run_once(s: &ScriptConfig) -> (Outcome, String, Vec<u8>) {
    let mut child = match spawn_group(&s.argv) {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::SpawnFailed(e.to_string()),
                String::new(),
                Vec::new(),
            );
        }
    };
    drop(child.stdin.take());
    let out = child.stdout.take().map(|o| capped_reader(o, STDOUT_CAP));
    let err = child.stderr.take().map(|e| capped_reader(e, STDERR_CAP));
    let deadline = Instant::now() + Duration::from_secs(u64::from(s.timeout_secs));
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Outcome::Exited(st.code()),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child, Duration::from_secs(2));
                break Outcome::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => {
                kill_group(&mut child, Duration::from_secs(2));
                break Outcome::Exited(None);
            }
        }
    };
    // A grandchild holding the pipes open is in the same group, now killed.
    let stdout = out
        .and_then(|h| h.join().ok())
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let stderr = err
        .and_then(|h| h.join().ok())
        .map(|(b, _)| b)
        .unwrap_or_default();
    (outcome, stdout, stderr)
}

/// The script's thread: run, send, sleep until the next due time.
pub fn run(s: &ScriptConfig, mut em: Emitter, stop: &Stopper) {
    let name = s.display_name();
    let every = Duration::from_secs(u64::from(s.interval_secs.max(1)));
    let mut next = Instant::now();
    loop {
        if stop.wait(next.saturating_duration_since(Instant::now())) {
            return;
        }
        next += every;
        let started = Instant::now();
        let (outcome, stdout, stderr) = run_once(s);
        log_stderr("script", &name, &stderr);
        match &outcome {
            Outcome::SpawnFailed(e) => {
                tracing::warn!(script = %name, error = %e, "cannot start script");
                continue;
            }
            Outcome::TimedOut => tracing::warn!(
                script = %name,
                timeout_secs = s.timeout_secs,
                "script timed out and was killed; sending what it printed before"
            ),
            Outcome::Exited(Some(0)) => {}
            Outcome::Exited(code) => tracing::warn!(
                script = %name,
                status = ?code,
                "script failed; sending what it printed"
            ),
        }
        let (readings, errors) = parse_output(&stdout, s);
        for e in errors.iter().take(10) {
            tracing::warn!(script = %name, problem = %e, "script output line skipped");
        }
        for r in &readings {
            if let Err(e) = em.emit(r) {
                tracing::warn!(script = %name, metric = %r.name, error = %e, "metric not sent");
            }
        }
        tracing::debug!(script = %name, metrics = readings.len(), elapsed = ?started.elapsed(), "script ran");
        // A run longer than the interval starts the next one at once, not a burst.
        if next < Instant::now() {
            next = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(argv: &[&str], timeout: u32) -> ScriptConfig {
        ScriptConfig {
            name: None,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            interval_secs: 60,
            timeout_secs: timeout,
            group: "scripts".into(),
        }
    }

    #[test]
    fn words_and_json_lines() {
        let s = cfg(&["x"], 5);
        let (r, e) = parse_output(
            "temp_c 21.5 float Celsius\n\
             # a comment\n\
             \n\
             state ok\n\
             fans 3 uint16 fans per tray\n\
             {\"name\": \"q\", \"value\": 7, \"units\": \"jobs\", \"group\": \"batch\"}\n\
             bad\n\
             n notanumber int32\n\
             t 1 complex\n\
             {\"value\": 1}\n",
            &s,
        );
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(
            (
                r[0].name.as_str(),
                r[0].type_name.as_str(),
                r[0].units.as_str()
            ),
            ("temp_c", "float", "Celsius")
        );
        assert_eq!(r[1].type_name, "string");
        assert_eq!(r[2].units, "fans per tray");
        assert_eq!((r[3].value.as_str(), r[3].group.as_str()), ("7", "batch"));
        assert_eq!(r[3].type_name, "double");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("line 7:"), "{e:?}");
    }

    #[test]
    fn a_script_runs_and_a_hung_one_is_killed_at_its_timeout() {
        let (o, out, err) = run_once(&cfg(&["sh", "-c", "echo a 1; echo oops >&2"], 5));
        assert!(matches!(o, Outcome::Exited(Some(0))));
        assert_eq!(out, "a 1\n");
        assert_eq!(err, b"oops\n");
        // The child and its grandchild (sleep) both go; the pipes close.
        let (o, out, _) = run_once(&cfg(&["sh", "-c", "echo partial 2; sleep 600 & wait"], 1));
        assert!(matches!(o, Outcome::TimedOut));
        assert_eq!(out, "partial 2\n");
        let (o, _, _) = run_once(&cfg(&["/nonexistent/script"], 1));
        assert!(matches!(o, Outcome::SpawnFailed(_)));
    }
}
