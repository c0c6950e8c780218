use super::*;
use crate::config::nagios::{HandlerConfig, HandlersConfig};

fn handler(name: &str, argv: &[&str]) -> HandlerConfig {
    HandlerConfig {
        name: name.into(),
        on: vec!["host_down".into()],
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..HandlerConfig::default()
    }
}

#[test]
fn globs() {
    for (p, t, want) in [
        ("*", "", true),
        ("*", "anything", true),
        ("web*", "web10", true),
        ("web?", "web10", false),
        ("w*b*1", "web-b1", true),
        ("node1", "node10", false),
        ("*.example", "a.example", true),
        ("", "", true),
        ("", "x", false),
    ] {
        assert_eq!(glob_match(p, t), want, "{p} ~ {t}");
    }
}

#[test]
fn events_match_by_kind_and_filters() {
    let mut h = handler("h", &["/bin/true"]);
    let down = sample_event(EventKind::HostDown, "web1");
    assert!(matches(&h, &down));
    assert!(!matches(&h, &sample_event(EventKind::HostUp, "web1")));
    // A handler's own runs never trigger handlers.
    h.on = vec!["host_down".into(), "flap".into()];
    assert!(!matches(&h, &sample_event(EventKind::HandlerRun, "web1")));
    assert!(matches(&h, &sample_event(EventKind::FlapStop, "web1")));
    h.hosts = "db*".into();
    assert!(!matches(&h, &down));
    h.hosts = "web*".into();
    h.state_types = vec!["SOFT".into()];
    assert!(!matches(&h, &down));
    h.state_types = vec!["HARD".into()];
    h.states = vec!["CRITICAL".into()];
    assert!(!matches(&h, &down));
    h.states = vec!["DOWN".into()];
    assert!(matches(&h, &down));
    // A rule filter other than * skips events without a rule.
    h.rules = "load".into();
    assert!(!matches(&h, &down));
    // A host filter other than * skips cluster-wide events.
    let mut incident = sample_event(EventKind::ClusterIncident, "x");
    incident.host = None;
    let mut c = handler("c", &["/bin/true"]);
    c.on = vec!["cluster_incident".into()];
    assert!(matches(&c, &incident));
    c.hosts = "web*".into();
    assert!(!matches(&c, &incident));
}

#[test]
fn placeholders_expand_and_are_exported() {
    let mut ev = sample_event(EventKind::Alert, "web1");
    ev.rule = Some("load".into());
    ev.value = Some(9.5);
    ev.state = "CRITICAL".into();
    assert_eq!(
        expand(
            "{host}:{cluster}:{state}/{state_type}/{attempt}of{max_attempts} {rule}={value} {{x}} #{event_id} {handler}",
            "h",
            &ev
        ),
        "web1:prod:CRITICAL/HARD/1of1 load=9.5 {x} #7 h"
    );
    // Expanded text is never re-expanded (a host named "{rule}" stays so).
    ev.host = Some("{rule}".into());
    assert_eq!(expand("{host}", "h", &ev), "{rule}");
    let env = environment("h", &ev);
    assert!(env.contains(&("GANGLION_STATE".into(), "CRITICAL".into())));
    assert!(env.contains(&("GANGLION_HANDLER".into(), "h".into())));
    assert_eq!(env.len(), crate::config::nagios::PLACEHOLDERS.len());
}

/// Starts a runner for `handlers`, sends `events`, and returns the first
/// `want` handler_run events recorded.
async fn runs(
    handlers: Vec<HandlerConfig>,
    limits: HandlersConfig,
    events: Vec<Event>,
    want: usize,
) -> Vec<Event> {
    let alerts = Alerts::detached();
    let mut rx = alerts.subscribe();
    let sd = CancellationToken::new();
    let _task = start(&handlers, &limits, alerts.clone(), sd.clone()).unwrap();
    for e in events {
        alerts.record(e);
    }
    let mut got = Vec::new();
    while got.len() < want {
        let e = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("a handler_run event within 60 s")
            .unwrap();
        if e.kind == EventKind::HandlerRun {
            got.push((*e).clone());
        }
    }
    sd.cancel();
    got
}

#[tokio::test]
async fn a_run_records_argv_output_exit_and_environment() {
    let h = handler(
        "show",
        &[
            "/bin/sh",
            "-c",
            "echo out $1 $GANGLION_STATE_TYPE; echo err >&2; exit 3",
            "sh",
            "{host}",
        ],
    );
    let r = runs(
        vec![h],
        HandlersConfig::default(),
        vec![sample_event(EventKind::HostDown, "web1")],
        1,
    )
    .await;
    let run = r[0].handler.as_ref().unwrap();
    assert_eq!(run.argv[4], "web1");
    assert_eq!(run.stdout, "out web1 HARD\n");
    assert_eq!(run.stderr, "err\n");
    assert_eq!(
        (run.exit_code, run.signal, run.timed_out),
        (Some(3), None, false)
    );
    assert_eq!(run.trigger_event, 7);
    assert_eq!(r[0].host.as_deref(), Some("web1"));
    assert!(r[0].output.contains("exit 3"), "{}", r[0].output);
}

#[tokio::test]
async fn a_program_that_cannot_start_is_recorded() {
    let h = handler("missing", &["/nonexistent/handler", "{host}"]);
    let r = runs(
        vec![h],
        HandlersConfig::default(),
        vec![sample_event(EventKind::HostDown, "web1")],
        1,
    )
    .await;
    let run = r[0].handler.as_ref().unwrap();
    assert!(
        run.error.as_deref().unwrap().contains("cannot start"),
        "{run:?}"
    );
    assert_eq!(run.exit_code, None);
}

#[tokio::test]
async fn a_handler_ignoring_sigterm_is_killed_after_the_grace() {
    let mut h = handler(
        "hang",
        &["/bin/sh", "-c", "trap '' TERM; echo waiting; sleep 30"],
    );
    h.timeout_secs = 1;
    h.kill_grace_secs = 1;
    let r = runs(
        vec![h],
        HandlersConfig::default(),
        vec![sample_event(EventKind::HostDown, "web1")],
        1,
    )
    .await;
    let run = r[0].handler.as_ref().unwrap();
    assert!(run.timed_out);
    assert_eq!(run.signal, Some(9));
    assert_eq!(run.stdout, "waiting\n");
}

#[tokio::test]
async fn one_run_per_target_at_a_time_and_others_run_meanwhile() {
    let h = handler(
        "slow",
        &["/bin/sh", "-c", "sleep 2; echo done $GANGLION_HOST"],
    );
    let events = vec![
        sample_event(EventKind::HostDown, "web1"),
        sample_event(EventKind::HostDown, "web1"),
        sample_event(EventKind::HostDown, "web2"),
    ];
    let r = runs(vec![h], HandlersConfig::default(), events, 3).await;
    let refused: Vec<_> = r
        .iter()
        .filter(|e| e.handler.as_ref().unwrap().error.is_some())
        .collect();
    assert_eq!(refused.len(), 1, "{r:?}");
    assert_eq!(refused[0].host.as_deref(), Some("web1"));
    assert!(
        refused[0].output.contains("still going"),
        "{}",
        refused[0].output
    );
    let done: Vec<_> = r
        .iter()
        .map(|e| e.handler.as_ref().unwrap().stdout.clone())
        .collect();
    assert!(
        done.contains(&"done web1\n".to_string()) && done.contains(&"done web2\n".to_string()),
        "{done:?}"
    );
}

#[tokio::test]
async fn the_rate_limit_refuses_with_the_reason() {
    let mut h = handler("once", &["/bin/true"]);
    h.rate_limit_runs = 1;
    let alerts = Alerts::detached();
    let mut rx = alerts.subscribe();
    let sd = CancellationToken::new();
    let _t = start(&[h], &HandlersConfig::default(), alerts.clone(), sd.clone()).unwrap();
    let mut results = Vec::new();
    for _ in 0..2 {
        // One after the other: the second is not "busy", it is over the rate.
        alerts.record(sample_event(EventKind::HostDown, "web1"));
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if e.kind == EventKind::HandlerRun {
                results.push(e);
                break;
            }
        }
    }
    sd.cancel();
    assert_eq!(results[0].handler.as_ref().unwrap().exit_code, Some(0));
    let second = results[1].handler.as_ref().unwrap();
    assert!(
        second.error.as_deref().unwrap().contains("rate_limit_runs"),
        "{second:?}"
    );
}

#[tokio::test]
async fn output_is_capped_and_flagged_and_a_background_child_does_not_hold_the_run() {
    let h = handler(
        "loud",
        &[
            "/bin/sh",
            "-c",
            "head -c 100000 /dev/zero | tr '\\0' x; (sleep 5 >&2 &); echo end >&2",
        ],
    );
    let limits = HandlersConfig {
        max_output_bytes: 1024,
        ..HandlersConfig::default()
    };
    let r = runs(
        vec![h],
        limits,
        vec![sample_event(EventKind::HostDown, "web1")],
        1,
    )
    .await;
    let run = r[0].handler.as_ref().unwrap();
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.stdout.len(), 1024);
    assert!(run.stdout_truncated && !run.stderr_truncated);
    assert_eq!(run.stderr, "end\n");
}

#[tokio::test]
async fn beyond_the_slots_and_the_waiting_room_a_run_is_refused_and_recorded() {
    let h = handler("slow", &["/bin/sh", "-c", "sleep 1"]);
    let limits = HandlersConfig {
        max_running: 1,
        max_waiting: 0,
        ..HandlersConfig::default()
    };
    let events = vec![
        sample_event(EventKind::HostDown, "web1"),
        sample_event(EventKind::HostDown, "web2"),
    ];
    let r = runs(vec![h], limits, events, 2).await;
    let refused: Vec<_> = r
        .iter()
        .filter_map(|e| e.handler.as_ref().unwrap().error.clone())
        .collect();
    assert_eq!(refused.len(), 1, "{r:?}");
    assert!(refused[0].contains("handlers.max_waiting"), "{refused:?}");
}

#[tokio::test]
async fn at_shutdown_a_running_handler_is_killed_and_recorded_and_a_waiting_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // Ignores SIGTERM (its sleep inherits that), so only SIGKILL ends it.
    let script = format!(
        "trap '' TERM; echo started; : > '{}'; sleep 60",
        marker.display()
    );
    let mut h = handler("stubborn", &["/bin/sh", "-c", &script]);
    h.kill_grace_secs = 1;
    let limits = HandlersConfig {
        max_running: 1,
        ..HandlersConfig::default()
    };
    let alerts = Alerts::detached();
    let mut rx = alerts.subscribe();
    let sd = CancellationToken::new();
    let _t = start(&[h], &limits, alerts.clone(), sd.clone()).unwrap();
    alerts.record(sample_event(EventKind::HostDown, "web1"));
    alerts.record(sample_event(EventKind::HostDown, "web2"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handler never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sd.cancel();
    let mut recorded = Vec::new();
    while recorded.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("every run is recorded at shutdown")
            .unwrap();
        if e.kind == EventKind::HandlerRun {
            recorded.push(e.handler.clone().unwrap());
        }
    }
    let killed = recorded
        .iter()
        .find(|r| r.exit_code.is_none() && r.signal.is_some())
        .unwrap_or_else(|| panic!("{recorded:?}"));
    assert_eq!(killed.error.as_deref(), Some(SHUTTING_DOWN));
    assert_eq!(killed.signal, Some(9), "SIGTERM was ignored: SIGKILL");
    assert_eq!(killed.stdout, "started\n", "its output so far is kept");
    let waiting = recorded
        .iter()
        .find(|r| r.signal.is_none())
        .unwrap_or_else(|| panic!("{recorded:?}"));
    assert_eq!(
        waiting.error.as_deref(),
        Some("not run: aggregator shutting down")
    );
    assert!(
        alerts.wait_for_runs(Duration::from_secs(10)),
        "no run is left holding the store open"
    );
}

/// Every hostile host name reaches the handler unchanged, as an argument
/// and in `GANGLION_HOST`, or (a NUL byte, which exec cannot carry) the run
/// is recorded as not started with the reason.
#[tokio::test]
async fn hostile_host_names_arrive_intact_or_the_refusal_is_recorded() {
    let h = handler(
        "echo",
        &[
            "/bin/sh",
            "-c",
            "printf '%s|%s' \"$1\" \"$GANGLION_HOST\"",
            "sh",
            "{host}",
        ],
    );
    for name in crate::hostile::names() {
        let r = runs(
            vec![h.clone()],
            HandlersConfig::default(),
            vec![sample_event(EventKind::HostDown, &name)],
            1,
        )
        .await;
        let run = r[0].handler.as_ref().unwrap();
        if name.contains('\0') {
            let e = run.error.as_deref().unwrap_or_default();
            assert!(e.contains("NUL byte"), "{name:?}: {run:?}");
            assert_eq!(run.exit_code, None);
        } else {
            assert_eq!(run.error, None, "{name:?}");
            assert_eq!(run.stdout, format!("{name}|{name}"), "{name:?}");
        }
    }
}

#[test]
fn nul_bytes_are_named() {
    let argv = vec!["/bin/true".to_string(), "a\0b".to_string()];
    assert!(nul_in(&argv, &[]).unwrap().contains("argument 1"));
    let env = vec![("GANGLION_HOST".to_string(), "x\0".to_string())];
    assert!(nul_in(&argv[..1], &env).unwrap().contains("GANGLION_HOST"));
    assert_eq!(nul_in(&argv[..1], &[]), None);
}
