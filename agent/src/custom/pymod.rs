//! `[[module]]`: a gmond Python metric module, run in a `python3` child that
//! speaks gmond's modpython protocol for it (`pyrunner.py`, embedded):
//! `metric_init(params)` once, each descriptor's `call_back(name)` every
//! `collect_every_secs`, `metric_cleanup()` at the end.
//!
//! The child answers one JSON line per request; a request that is not
//! answered within `timeout_secs` (a hung module), a crash, or a module that
//! raises in `metric_init` gets the child killed (its process group) and
//! restarted after a backoff that doubles from 1 s to 5 min and resets after
//! a healthy minute. Its stderr (tracebacks, prints) is logged under the
//! module's name. A value of the wrong type for its descriptor's
//! `value_type` is logged and skipped; the module's other metrics still go out.

use super::{Emitter, Reading, Stopper, kill_group, spawn_group};
use crate::config::ModuleConfig;
use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNNER: &str = include_str!("pyrunner.py");

/// gmond's `value_type` → gmetric's type name.
pub fn gmetric_type(value_type: &str) -> Option<&'static str> {
    Some(match value_type {
        "string" => "string",
        "uint" | "uint32" => "uint32",
        "int" | "int32" => "int32",
        "uint16" => "uint16",
        "int16" => "int16",
        "uint8" => "uint8",
        "int8" => "int8",
        "float" => "float",
        "double" => "double",
        _ => return None,
    })
}

/// A descriptor as metric_init returned it (without its callback).
#[derive(Debug, Clone)]
struct Desc {
    name: String,
    type_name: &'static str,
    units: String,
    slope: String,
    tmax: u32,
    group: String,
    desc: Option<String>,
}

fn descs(v: &serde_json::Value, m: &ModuleConfig) -> Result<Vec<Desc>, String> {
    let list = v
        .get("descriptors")
        .and_then(|d| d.as_array())
        .ok_or("no descriptors")?;
    let s = |d: &serde_json::Value, k: &str| d.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let mut out = Vec::new();
    for d in list {
        let name = s(d, "name").ok_or("a descriptor without a name")?;
        let vt = s(d, "value_type").unwrap_or_else(|| "uint".into());
        let type_name = gmetric_type(&vt)
            .ok_or_else(|| format!("descriptor {name}: value_type {vt:?} is not gmond's"))?;
        out.push(Desc {
            name,
            type_name,
            units: s(d, "units").unwrap_or_default(),
            slope: s(d, "slope").unwrap_or_else(|| "both".into()),
            tmax: d
                .get("time_max")
                .and_then(serde_json::Value::as_u64)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(60),
            group: m
                .group
                .clone()
                .or_else(|| s(d, "groups"))
                .unwrap_or_else(|| m.name.clone()),
            desc: s(d, "description"),
        });
    }
    Ok(out)
}

/// The value as gmetric text, if it fits the descriptor's type.
fn value_text(d: &Desc, v: &serde_json::Value) -> Result<String, String> {
    let num = |x: &serde_json::Value| x.as_f64();
    match (d.type_name, v) {
        ("string", serde_json::Value::String(s)) => Ok(s.clone()),
        ("string", serde_json::Value::Number(n)) => Ok(n.to_string()),
        ("float" | "double", x) if num(x).is_some() => Ok(v.to_string()),
        (t, serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => {
            let i = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
            let (lo, hi): (i128, i128) = match t {
                "uint32" => (0, u32::MAX.into()),
                "int32" => (i32::MIN.into(), i32::MAX.into()),
                "uint16" => (0, u16::MAX.into()),
                "int16" => (i16::MIN.into(), i16::MAX.into()),
                "uint8" => (0, u8::MAX.into()),
                _ => (i8::MIN.into(), i8::MAX.into()),
            };
            match i {
                Some(i) if (lo..=hi).contains(&i) => Ok(i.to_string()),
                _ => Err(format!("{n} is out of range for {t}")),
            }
        }
        (t, other) => Err(format!(
            "returned {other} where its value_type asks for {t}"
        )),
    }
}

struct Runner {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Runner {
    fn start(m: &ModuleConfig) -> std::io::Result<Runner> {
        // gmond hands every param to metric_init as a string.
        let params: serde_json::Map<String, serde_json::Value> = m
            .params
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), serde_json::Value::String(text))
            })
            .collect();
        let params = serde_json::Value::Object(params).to_string();
        let argv = vec![
            m.python.clone(),
            "-u".into(),
            "-c".into(),
            RUNNER.into(),
            m.path.display().to_string(),
            params,
        ];
        let mut child = spawn_group(&argv)?;
        let (tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            let name = m.name.clone();
            std::thread::spawn(move || {
                let mut logged = 0usize;
                let mut window = Instant::now();
                for l in BufReader::new(err).lines() {
                    let Ok(l) = l else { break };
                    let l: String = l.chars().take(500).collect();
                    // At most 20 lines a minute reach the log; the last 20 are
                    // kept for the crash report either way.
                    if window.elapsed() > Duration::from_secs(60) {
                        window = Instant::now();
                        logged = 0;
                    }
                    if logged < 20 {
                        tracing::warn!(module = %name, stderr = %l, "module stderr");
                        logged += 1;
                    }
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    if k.len() >= 20 {
                        k.remove(0);
                    }
                    k.push(l);
                }
            });
        }
        Ok(Runner {
            child,
            lines,
            stderr,
        })
    }

    fn recv(&self, timeout: Duration) -> Result<serde_json::Value, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => serde_json::from_str(&l).map_err(|e| format!("unreadable answer: {e}")),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("no answer within {} s (hung?)", timeout.as_secs()))
            }
            Err(RecvTimeoutError::Disconnected) => Err("the module's process ended".into()),
        }
    }

    fn stop(mut self) -> Vec<String> {
        // Closing stdin lets metric_cleanup run; the group is killed after a grace.
        drop(self.child.stdin.take());
        kill_group(&mut self.child, Duration::from_secs(2));
        std::mem::take(&mut *self.stderr.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One life of the module: init, then collect until a failure or stop.
/// Returns why it ended (None = stopped).
fn life(m: &ModuleConfig, em: &mut Emitter, stop: &Stopper) -> Option<String> {
    let timeout = Duration::from_secs(u64::from(m.timeout_secs.max(1)));
    let mut r = match Runner::start(m) {
        Ok(r) => r,
        Err(e) => return Some(format!("cannot start {}: {e}", m.python)),
    };
    let result = (|| {
        let init = r.recv(timeout)?;
        let ds = descs(&init, m)?;
        tracing::info!(module = %m.name, metrics = ds.len(), "module initialised");
        let every = Duration::from_secs(u64::from(m.collect_every_secs.max(1)));
        let mut next = Instant::now();
        loop {
            if stop.wait(next.saturating_duration_since(Instant::now())) {
                return Ok(());
            }
            next += every;
            let stdin = r.child.stdin.as_mut().ok_or("stdin closed")?;
            stdin
                .write_all(b"collect\n")
                .and_then(|()| stdin.flush())
                .map_err(|e| format!("the module's process ended ({e})"))?;
            let answer = r.recv(timeout)?;
            let values = answer
                .get("values")
                .and_then(|v| v.as_array())
                .ok_or("an answer without values")?;
            for v in values {
                let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                let Some(d) = ds.iter().find(|d| d.name == name) else {
                    continue;
                };
                let text = match (v.get("value"), v.get("error")) {
                    (Some(val), _) => value_text(d, val),
                    (None, Some(e)) => {
                        Err(format!("call_back failed: {}", e.as_str().unwrap_or("?")))
                    }
                    (None, None) => Err("no value".into()),
                };
                match text {
                    Ok(value) => {
                        let reading = Reading {
                            name: d.name.clone(),
                            value,
                            type_name: d.type_name.into(),
                            units: d.units.clone(),
                            slope: d.slope.clone(),
                            tmax: d.tmax,
                            group: d.group.clone(),
                            desc: d.desc.clone(),
                            title: None,
                        };
                        if let Err(e) = em.emit(&reading) {
                            tracing::warn!(module = %m.name, metric = %d.name, error = %e, "metric not sent");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(module = %m.name, metric = %d.name, problem = %e, "module metric skipped")
                    }
                }
            }
        }
    })();
    let tail = r.stop();
    match result {
        Ok(()) => None,
        Err(e) => Some(if tail.is_empty() {
            e
        } else {
            format!("{e}; its stderr ended with: {}", tail.join(" | "))
        }),
    }
}

/// The module's thread: lives, and restarts with backoff after each failure.
pub fn run(m: &ModuleConfig, mut em: Emitter, stop: &Stopper) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let Some(why) = life(m, &mut em, stop) else {
            return;
        };
        // A minute of good collections resets the backoff.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tracing::error!(module = %m.name, path = %m.path.display(), error = %why, retry_in = ?backoff, "python module failed; restarting it");
        if stop.wait(backoff) {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(t: &'static str) -> Desc {
        Desc {
            name: "x".into(),
            type_name: t,
            units: String::new(),
            slope: "both".into(),
            tmax: 60,
            group: "g".into(),
            desc: None,
        }
    }

    #[test]
    fn values_must_fit_their_type() {
        use serde_json::json;
        assert_eq!(value_text(&d("uint32"), &json!(5)).unwrap(), "5");
        assert!(value_text(&d("uint32"), &json!(-1)).is_err());
        assert!(value_text(&d("uint32"), &json!("five")).is_err());
        assert!(value_text(&d("uint16"), &json!(70000)).is_err());
        assert_eq!(value_text(&d("float"), &json!(1.5)).unwrap(), "1.5");
        assert_eq!(value_text(&d("double"), &json!(2)).unwrap(), "2");
        assert_eq!(value_text(&d("string"), &json!("up")).unwrap(), "up");
        assert!(value_text(&d("float"), &json!("fast")).is_err());
        assert_eq!(gmetric_type("uint"), Some("uint32"));
        assert_eq!(gmetric_type("complex"), None);
    }
}
