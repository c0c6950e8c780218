//! Nagios both ways, against Debian's real nagios4: the aggregator's
//! `[nagios] command_file` feeds passive host and service results into a
//! private Nagios whose objects come from `ganglion-aggregator nagios-config`,
//! and Nagios runs `check_ganglion` as an active check against the same
//! aggregator. The states Nagios shows in status.dat must be ours, also
//! after a host dies.

use ganglion_proto::xdr::Value;
use ganglion_tests::nagios::{Nagios, PLUGIN_DIR, nagios_config};
use ganglion_tests::*;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn alerts(agg: &Aggregator) -> Json {
    serde_json::from_str(&http_get(agg.http, "/api/alerts")).unwrap_or(Json::Null)
}

/// Our state of rule `rule` on `host`: listed when not OK.
fn our_service_state(a: &Json, host: &str, rule: &str) -> String {
    a["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["host"] == host && p["rule"] == rule)
        .map_or("OK".into(), |p| {
            p["state"].as_str().unwrap_or("?").to_string()
        })
}

fn code(state: &str) -> &'static str {
    match state {
        "OK" | "UP" => "0",
        "WARNING" | "DOWN" => "1",
        "CRITICAL" => "2",
        _ => "3",
    }
}

#[test]
fn nagios4_takes_our_passive_results_and_runs_check_ganglion() {
    let ndir = Nagios::prepare();
    let cmd_file = ndir.path().join("rw/nagios.cmd");
    let agg = Aggregator::start_with(
        "prod",
        "reverse_dns = false\n",
        &format!(
            "[alerts]\ninterval_secs = 1\nwarmup_secs = 0\nmax_check_attempts = 1\nhost_down_after_secs = 4\n\
             [[alert]]\nname = \"load\"\nmetric = \"load_one\"\nwarning = \"4\"\ncritical = \"8\"\n\
             [nagios]\ncommand_file = \"{}\"\nresend_secs = 1\n",
            cmd_file.display()
        ),
    );
    // Two hosts keep reporting (until one is taken out of `alive`).
    let alive = Arc::new(Mutex::new(HashSet::from(["node1", "node2"])));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (alive, stop, udp) = (alive.clone(), stop.clone(), agg.udp);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (ip, host, v) in [("10.1.0.1", "node1", 9.25), ("10.1.0.2", "node2", 0.5)] {
                    if alive.lock().unwrap().contains(host) {
                        send_metric(
                            udp,
                            &format!("{ip}:{host}"),
                            "load_one",
                            "float",
                            3,
                            Value::Float(v),
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    wait_until(
        "node1 CRITICAL in /api/alerts",
        Duration::from_secs(20),
        || (our_service_state(&alerts(&agg), "node1", "load") == "CRITICAL").then_some(()),
    );
    // Before Nagios runs, the sink finds no FIFO: counted, nothing blocks.
    wait_until(
        "results counted as not_running",
        Duration::from_secs(10),
        || {
            (metrics_value(
                agg.http,
                "ganglion_nagios_results_total{result=\"not_running\"}",
            ) > 0)
                .then_some(())
        },
    );

    // The objects, as a site would make them.
    let url = format!("http://{}", agg.http);
    let mut objects = nagios_config(&agg, ndir.path());
    for h in ["node1", "node2"] {
        assert!(
            objects.contains(&format!("host_name                {h}\n")),
            "{objects}"
        );
    }
    // And an active check_ganglion service beside the passive ones.
    objects.push_str(&format!(
        "define service {{\n    use ganglion-service\n    host_name node2\n    service_description load_active\n    \
         active_checks_enabled 1\n    check_freshness 0\n    check_interval 1\n    check_period 24x7\n    \
         check_command check_ganglion_metric!{url}!prod!load_one!4!8\n}}\n"
    ));
    let check_ganglion = workspace_bin("check_ganglion");
    let check_dummy = Path::new(PLUGIN_DIR).join("check_dummy");
    let nagios = Nagios::start(
        ndir,
        &objects,
        "",
        &[
            (&check_ganglion, "check_ganglion"),
            (&check_dummy, "check_dummy"),
        ],
    );

    // Passive: our states, as Nagios shows them.
    let field = |b: &Option<std::collections::HashMap<String, String>>, k: &str| {
        b.as_ref()
            .and_then(|b| b.get(k).cloned())
            .unwrap_or_default()
    };
    wait_until(
        "passive results in status.dat",
        Duration::from_secs(30),
        || {
            let n1 = nagios.service("node1", "load");
            let n2 = nagios.service("node2", "load");
            let h1 = nagios.host("node1");
            (field(&n1, "current_state") == "2"
                && field(&n1, "check_type") == "1"
                && field(&n2, "current_state") == "0"
                && field(&h1, "current_state") == "0"
                && field(&h1, "has_been_checked") == "1")
                .then_some(())
        },
    );
    let n1 = nagios.service("node1", "load");
    assert!(field(&n1, "plugin_output").contains("load_one"), "{n1:?}");
    assert!(
        field(&n1, "performance_data").contains("load_one"),
        "{n1:?}"
    );
    // Active: Nagios ran check_ganglion against the aggregator.
    let active = wait_until(
        "check_ganglion's result in status.dat",
        Duration::from_secs(30),
        || {
            let s = nagios.service("node2", "load_active");
            (field(&s, "has_been_checked") == "1" && field(&s, "check_type") == "0").then_some(s)
        },
    );
    assert_eq!(field(&active, "current_state"), "0", "{active:?}");
    assert!(
        field(&active, "plugin_output").starts_with("GANGLION OK - load_one = "),
        "{active:?}"
    );
    assert!(
        field(&active, "performance_data").starts_with("'load_one'=0.5;4;8"),
        "{active:?}"
    );

    // node1 dies: DOWN HARD in Nagios, as in our /api/alerts.
    alive.lock().unwrap().remove("node1");
    wait_until("node1 DOWN in /api/alerts", Duration::from_secs(30), || {
        let a = alerts(&agg);
        a["hosts_down"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["host"] == "node1")
            .then_some(())
    });
    wait_until(
        "node1 DOWN HARD in status.dat",
        Duration::from_secs(30),
        || {
            let h = nagios.host("node1");
            (field(&h, "current_state") == "1" && field(&h, "state_type") == "1").then_some(())
        },
    );
    // Every service Nagios has from us matches our state (polled: both sides
    // move on their own clocks).
    wait_until(
        "status.dat services match /api/alerts",
        Duration::from_secs(30),
        || {
            let a = alerts(&agg);
            let all_match = ["node1", "node2"].iter().all(|h| {
                let ours = our_service_state(&a, h, "load");
                field(&nagios.service(h, "load"), "current_state") == code(&ours)
            });
            all_match.then_some(())
        },
    );
    assert!(
        metrics_value(
            agg.http,
            "ganglion_nagios_results_total{result=\"written\"}"
        ) > 0
    );
    let log = nagios.log();
    assert!(log.contains("HOST ALERT: node1;DOWN;HARD;1;"), "{log}");
    assert!(!log.contains("Unrecognized external command"), "{log}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}
