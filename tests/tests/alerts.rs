//! The health engine end to end: the real `gmetric` feeds an aggregator with
//! an `[[alert]]` rule; the value crossing its thresholds shows up as WARNING
//! then CRITICAL HARD in `/api/alerts` with the transitions in `/api/events`;
//! a host whose sender stops goes DOWN HARD; after a restart on the same
//! database the state is back and nothing is reported twice.

use ganglion_tests::{Aggregator, gmetric, gmetric_conf, http_get, wait_until};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

const ALERTS: &str = "[alerts]\ninterval_secs = 1\nwarmup_secs = 2\nmax_check_attempts = 2\n\
                      host_down_after_secs = 4\n\
                      [[alert]]\nname = \"temp\"\nmetric = \"temp_c\"\nwarning = \"50\"\n\
                      critical = \"80\"\n";

fn json(agg: &Aggregator, path: &str) -> Value {
    serde_json::from_str(&http_get(agg.http, path)).unwrap_or(Value::Null)
}

fn events(agg: &Aggregator, q: &str) -> Vec<Value> {
    json(agg, &format!("/api/events?{q}"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sends `temp_c` for node5 every 300 ms with the value in `temp` until dropped.
struct Sender {
    stop: Arc<AtomicBool>,
    temp: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(agg: &Aggregator) -> Sender {
        let conf = gmetric_conf(agg.dir.path(), agg.udp);
        let stop = Arc::new(AtomicBool::new(false));
        let temp = Arc::new(AtomicU32::new(20));
        let (s, t) = (stop.clone(), temp.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let v = t.load(Ordering::Relaxed).to_string();
                gmetric(
                    &conf,
                    &[
                        "-n",
                        "temp_c",
                        "-v",
                        &v,
                        "-t",
                        "float",
                        "-u",
                        "C",
                        "-S",
                        "10.0.0.5:node5",
                    ],
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Sender {
            stop,
            temp,
            thread: Some(thread),
        }
    }

    fn set(&self, v: u32) {
        self.temp.store(v, Ordering::Relaxed);
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn problem_state(agg: &Aggregator) -> Option<(String, String)> {
    let v = json(agg, "/api/alerts?host=node5");
    let p = v["problems"].as_array()?.first()?.clone();
    Some((
        p["state"].as_str()?.to_string(),
        p["state_type"].as_str()?.to_string(),
    ))
}

#[test]
fn thresholds_give_hard_states_and_a_silent_host_goes_down() {
    let root = tempfile::tempdir().unwrap();
    let rrds = root.path().join("rrds");
    let agg = Aggregator::start_at(&rrds, "alertclust", "reverse_dns = false\n", ALERTS);
    let sender = Sender::start(&agg);
    // warmup_secs = 2 also holds a new host's missing metrics that long, so
    // the instant between gmetric's metadata and value is never UNKNOWN.
    wait_until("node5 is known and OK", Duration::from_secs(20), || {
        let v = json(&agg, "/api/alerts");
        (v["warming_up"] == false && v["counts"]["warning"] == 0).then_some(())
    });

    sender.set(60);
    wait_until(
        "temp WARNING HARD in /api/alerts",
        Duration::from_secs(20),
        || (problem_state(&agg)? == ("WARNING".into(), "HARD".into())).then_some(()),
    );
    sender.set(95);
    wait_until(
        "temp CRITICAL HARD in /api/alerts",
        Duration::from_secs(20),
        || (problem_state(&agg)? == ("CRITICAL".into(), "HARD".into())).then_some(()),
    );
    let v = json(&agg, "/api/alerts");
    assert_eq!(v["counts"]["critical"], 1, "{v}");
    let p = &v["problems"][0];
    assert_eq!(p["rule"], "temp");
    assert_eq!(p["cluster"], "alertclust");
    assert_eq!(p["critical"], "80");
    assert!(
        p["output"].as_str().unwrap().contains("(critical 80)"),
        "{p}"
    );

    // The history, newest first: WARNING SOFT 1, WARNING HARD 2, CRITICAL HARD 2.
    let ev = events(&agg, "host=node5&rule=temp&kind=alert");
    let seen: Vec<(String, String, u64)> = ev
        .iter()
        .rev()
        .map(|e| {
            (
                e["state"].as_str().unwrap().to_string(),
                e["state_type"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("WARNING".into(), "SOFT".into(), 1),
            ("WARNING".into(), "HARD".into(), 2),
            ("CRITICAL".into(), "HARD".into(), 2),
        ],
        "{ev:?}"
    );

    // The sender stops: DOWN after 4 s, HARD at the 2nd result.
    drop(sender);
    let down = wait_until("node5 DOWN HARD", Duration::from_secs(30), || {
        let v = json(&agg, "/api/alerts");
        let h = v["hosts_down"]
            .as_array()?
            .iter()
            .find(|h| h["host"] == "node5" && h["state_type"] == "HARD")?
            .clone();
        Some(h)
    });
    assert_eq!(down["up"], false);
    let hd = events(&agg, "kind=host_down");
    assert_eq!(hd.len(), 1, "{hd:?}");
    assert_eq!(hd[0]["host"], "node5");
    assert!(ganglion_tests::metrics_value(agg.http, "ganglion_alerts_events_stored_total") >= 4);
    let stored = events(&agg, "limit=1000").len();
    drop(agg);

    // Restart on the same tree (and database): node5 is still DOWN, and a
    // few evaluations later nothing new was stored.
    let agg = Aggregator::start_at(&rrds, "alertclust", "reverse_dns = false\n", ALERTS);
    wait_until("evaluations after restart", Duration::from_secs(20), || {
        (ganglion_tests::metrics_value(agg.http, "ganglion_alerts_evaluations_total") >= 3)
            .then_some(())
    });
    let v = json(&agg, "/api/alerts");
    assert_eq!(v["counts"]["down"], 1, "{v}");
    assert_eq!(
        v["counts"]["critical"], 1,
        "the rule's state is restored: {v}"
    );
    assert_eq!(
        events(&agg, "limit=1000").len(),
        stored,
        "no duplicate events"
    );
}

fn sighup(agg: &Aggregator) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &agg.guard.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP failed");
}

fn problem(agg: &Aggregator, rule: &str) -> Option<(String, String)> {
    let v = json(agg, "/api/alerts?host=node5");
    let p = v["problems"]
        .as_array()?
        .iter()
        .find(|p| p["rule"] == rule)?
        .clone();
    Some((
        p["state"].as_str()?.to_string(),
        p["state_type"].as_str()?.to_string(),
    ))
}

#[test]
fn sighup_adds_a_rule_and_keeps_the_hard_state_of_the_others() {
    let agg = Aggregator::start("alertclust", ALERTS);
    let sender = Sender::start(&agg);
    wait_until("node5 is known and OK", Duration::from_secs(20), || {
        let v = json(&agg, "/api/alerts");
        (v["warming_up"] == false && v["counts"]["warning"] == 0).then_some(())
    });
    sender.set(95);
    wait_until("temp CRITICAL HARD", Duration::from_secs(20), || {
        (problem(&agg, "temp")? == ("CRITICAL".into(), "HARD".into())).then_some(())
    });
    let temp_events = events(&agg, "rule=temp&kind=alert").len();
    let path = agg.dir.path().join("aggregator.toml");
    let original = std::fs::read_to_string(&path).unwrap();

    // A file that does not validate: logged with the key, nothing changes.
    std::fs::write(
        &path,
        format!(
            "{original}[[alert]]\nname = \"broken\"\nmetric = \"temp_c\"\nwarning = \"nonsense\"\n"
        ),
    )
    .unwrap();
    sighup(&agg);
    wait_until(
        "the refused reload is logged",
        Duration::from_secs(10),
        || {
            agg.log()
                .contains("alert[\"broken\"].warning")
                .then_some(())
        },
    );

    // A new rule: evaluated from the next pass, starting OK (SOFT 1, then
    // HARD at attempt 2); the old rule keeps its HARD state, no new event.
    std::fs::write(
        &path,
        format!("{original}[[alert]]\nname = \"hot\"\nmetric = \"temp_c\"\ncritical = \"90\"\n"),
    )
    .unwrap();
    sighup(&agg);
    wait_until(
        "hot CRITICAL HARD after the reload",
        Duration::from_secs(20),
        || (problem(&agg, "hot")? == ("CRITICAL".into(), "HARD".into())).then_some(()),
    );
    assert_eq!(
        problem(&agg, "temp"),
        Some(("CRITICAL".into(), "HARD".into()))
    );
    let hot: Vec<(String, u64)> = events(&agg, "rule=hot&kind=alert")
        .iter()
        .rev()
        .map(|e| {
            (
                e["state_type"].as_str().unwrap().to_string(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hot, vec![("SOFT".into(), 1), ("HARD".into(), 2)]);
    assert_eq!(
        events(&agg, "rule=temp&kind=alert").len(),
        temp_events,
        "the kept rule reported nothing again"
    );
    assert!(events(&agg, "kind=recovery").is_empty());

    // The rule removed again: its problem is gone, nothing is reported.
    std::fs::write(&path, &original).unwrap();
    sighup(&agg);
    wait_until(
        "hot dropped after the reload",
        Duration::from_secs(20),
        || problem(&agg, "hot").is_none().then_some(()),
    );
    assert_eq!(
        problem(&agg, "temp"),
        Some(("CRITICAL".into(), "HARD".into()))
    );
    assert!(events(&agg, "kind=recovery").is_empty());
    let reloads = |r: &str| {
        ganglion_tests::metrics_value(
            agg.http,
            &format!("ganglion_alerts_reloads_total{{result=\"{r}\"}}"),
        )
    };
    assert_eq!((reloads("applied"), reloads("invalid")), (2, 1));
}

#[test]
fn a_handler_still_running_at_shutdown_is_stopped_and_recorded() {
    let root = tempfile::tempdir().unwrap();
    let rrds = root.path().join("rrds");
    let marker = root.path().join("handler-started");
    // Ignores SIGTERM (as does its sleep): only the SIGKILL after its grace ends it.
    let handler = format!(
        "[[handler]]\nname = \"slow\"\non = [\"alert\"]\nkill_grace_secs = 1\ntimeout_secs = 120\n\
         argv = [\"/bin/sh\", \"-c\", \"trap '' TERM; echo started; : > {}; sleep 100\"]\n",
        marker.display()
    );
    let config = format!("{ALERTS}{handler}");
    let mut agg = Aggregator::start_at(&rrds, "alertclust", "reverse_dns = false\n", &config);
    let sender = Sender::start(&agg);
    wait_until("node5 is known", Duration::from_secs(20), || {
        (json(&agg, "/api/alerts")["warming_up"] == false).then_some(())
    });
    sender.set(95);
    wait_until("the handler runs", Duration::from_secs(20), || {
        marker.exists().then_some(())
    });
    drop(sender);
    let code = agg.guard.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "clean exit within the bound:\n{}", agg.log());
    drop(agg);

    // The run was recorded before the store closed.
    let agg = Aggregator::start_at(&rrds, "alertclust", "reverse_dns = false\n", &config);
    let runs = events(&agg, "kind=handler_run");
    let stopped: Vec<&Value> = runs
        .iter()
        .filter(|e| e["handler"]["error"] == "aggregator shutting down")
        .collect();
    assert_eq!(stopped.len(), 1, "{runs:?}");
    let run = &stopped[0]["handler"];
    assert_eq!(run["stdout"], "started\n", "{run}");
    assert_eq!(
        run["signal"], 9,
        "SIGTERM was ignored, SIGKILL ended it: {run}"
    );
}
