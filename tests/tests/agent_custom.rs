//! Custom metrics, checked at the real gmond: `[[script]]` output lines and
//! gmond Python modules (written here in gmond's modpython protocol, since
//! Debian no longer packages the modules) reach gmond's XML, while a module
//! that hangs, one that raises in `metric_init` and one that returns the
//! wrong type are each contained: logged under their name, the hung and the
//! raising one restarted, and every other metric still arrives.

use ganglion_tests::{ChildGuard, free_tcp_port, gmond_conf, read_tcp, start_gmond, workspace_bin};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GOOD: &str = r#"
import random
def temp_handler(name):
    return 20.5
def state_handler(name):
    return "ready"
def metric_init(params):
    global limit
    limit = int(params["RandomMax"])
    return [
        {"name": "py_temp", "call_back": temp_handler, "time_max": 60, "value_type": "float",
         "units": "C", "slope": "both", "format": "%f", "description": "a temperature",
         "groups": "pytest"},
        {"name": "py_limit", "call_back": lambda n: limit, "time_max": 60, "value_type": "uint",
         "units": "", "slope": "both", "format": "%u", "description": "the param", "groups": "pytest"},
        {"name": "py_state", "call_back": state_handler, "time_max": 60, "value_type": "string",
         "units": "", "slope": "zero", "format": "%s", "description": "state", "groups": "pytest"},
    ]
def metric_cleanup():
    pass
"#;

const HANGS: &str = r#"
import time
def metric_init(params):
    return [{"name": "py_hang", "call_back": lambda n: time.sleep(600), "value_type": "uint"}]
"#;

const RAISES: &str = r#"
import sys
def metric_init(params):
    print("about to fail", file=sys.stderr)
    raise ValueError("no such device: sensor7")
"#;

const WRONG_TYPE: &str = r#"
def metric_init(params):
    return [
        {"name": "py_wrong", "call_back": lambda n: "abc", "value_type": "uint"},
        {"name": "py_right", "call_back": lambda n: 42, "value_type": "uint"},
    ]
"#;

#[test]
fn scripts_and_python_modules_reach_gmond_and_bad_modules_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let conf = gmond_conf(dir.path(), "custom", port, None);
    let _gmond: ChildGuard = start_gmond(&conf, port);
    let xml_addr = SocketAddr::from(([127, 0, 0, 1], port));

    for (name, body) in [
        ("good", GOOD),
        ("hangs", HANGS),
        ("raises", RAISES),
        ("wrongtype", WRONG_TYPE),
    ] {
        std::fs::write(dir.path().join(format!("{name}.py")), body).unwrap();
    }
    let script = dir.path().join("jobs.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'queue_depth 17 uint32 jobs'\necho '{\"name\": \"queue_state\", \"value\": \"draining\"}'\necho 'lonely'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let d = dir.path().display();
    let toml = format!(
        r#"
send_metadata_interval_secs = 5
[[send]]
host = "127.0.0.1"
port = {port}

[[script]]
argv = ["{d}/jobs.sh"]
interval_secs = 1

[[script]]
name = "stuck"
argv = ["sleep", "600"]
interval_secs = 1
timeout_secs = 1

[[module]]
name = "good"
path = "{d}/good.py"
params = {{ RandomMax = 600 }}
collect_every_secs = 1

[[module]]
name = "hangs"
path = "{d}/hangs.py"
collect_every_secs = 1
timeout_secs = 1

[[module]]
name = "raises"
path = "{d}/raises.py"
collect_every_secs = 1

[[module]]
name = "wrongtype"
path = "{d}/wrongtype.py"
collect_every_secs = 1
"#
    );
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, toml).unwrap();
    let log = dir.path().join("agent.log");
    let _agent = ChildGuard::spawn(
        "ganglion-agent",
        Command::new(workspace_bin("ganglion-agent"))
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );

    let wanted = [
        ("py_temp", "20.5"),
        ("py_limit", "600"),
        ("py_state", "ready"),
        ("py_right", "42"),
        ("queue_depth", "17"),
        ("queue_state", "draining"),
    ];
    let deadline = Instant::now() + Duration::from_secs(40);
    let (mut xml, mut log_text);
    loop {
        xml = String::from_utf8_lossy(&read_tcp(xml_addr, None)).into_owned();
        log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let all_there = wanted
            .iter()
            .all(|(n, v)| xml.contains(&format!("NAME=\"{n}\" VAL=\"{v}")));
        // Both contained failures have been retried at least once.
        let restarted = log_text.matches("python module failed").count() >= 3;
        if all_there && restarted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything arrived in time.\nXML:\n{xml}\nagent log:\n{log_text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The wrong-typed value never reached gmond; its sibling did.
    assert!(!xml.contains("NAME=\"py_wrong\" VAL="), "{xml}");
    assert!(
        log_text.contains("module=wrongtype") && log_text.contains("py_wrong"),
        "{log_text}"
    );
    // The hung module was timed out, the raising one's traceback logged.
    assert!(log_text.contains("no answer within 1 s"), "{log_text}");
    assert!(log_text.contains("no such device: sensor7"), "{log_text}");
    assert!(log_text.contains("about to fail"), "{log_text}");
    // The hung script was killed at its timeout; the broken line was reported.
    assert!(log_text.contains("script timed out"), "{log_text}");
    assert!(log_text.contains("line 3"), "{log_text}");
    // Metric metadata carries the module's units, group and description.
    let temp = &xml[xml.find("NAME=\"py_temp\"").unwrap()..];
    let temp = &temp[..temp.find("</METRIC>").unwrap()];
    assert!(
        temp.contains("UNITS=\"C\"") && temp.contains("TYPE=\"float\""),
        "{temp}"
    );
    assert!(temp.contains("VAL=\"pytest\""), "{temp}");
}
