//! Migration: `ganglion-aggregator import gmetad.conf` and `ganglion-agent
//! import gmond.conf` on Debian's shipped files (installed with the test
//! peers) and on an include tree on disk; each output must pass the binary's
//! own `--check-config`, and only unreadable input fails.

use ganglion_tests::workspace_bin;
use std::path::Path;
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(bin: &str, toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("imported.toml");
    std::fs::write(&f, toml).unwrap();
    let (ok, _, err) = run(bin, &["--check-config", "--config", f.to_str().unwrap()]);
    assert!(ok, "{bin} refuses its own import: {err}\n{toml}");
}

fn shipped(path: &str) -> &str {
    assert!(
        Path::new(path).is_file(),
        "{path} is missing: the README's test command installs ganglia-monitor and gmetad"
    );
    path
}

#[test]
fn debians_gmetad_conf_imports_and_loads() {
    let (ok, toml, _) = run(
        "ganglion-aggregator",
        &["import", shipped("/etc/ganglia/gmetad.conf")],
    );
    assert!(ok);
    assert!(toml.contains("name = \"this host\""), "{toml}");
    assert!(toml.contains("addresses = [\"localhost:8649\"]"), "{toml}");
    assert!(toml.contains("case_sensitive_hostnames = true"), "{toml}");
    assert!(toml.contains("setuid_username"), "commented: {toml}");
    check("ganglion-aggregator", &toml);
}

#[test]
fn debians_gmond_conf_imports_and_loads_with_every_metric_kept() {
    let (ok, toml, _) = run(
        "ganglion-agent",
        &["import", shipped("/etc/ganglia/gmond.conf")],
    );
    assert!(ok);
    check("ganglion-agent", &toml);
    // Debian's file holds gmond's default groups: every metric it names is
    // one the agent collects, so the import keeps them all.
    let names = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .split("[[collection_group.metric]]")
            .skip(1)
            .filter_map(|m| {
                m.lines()
                    .find(|l| l.starts_with("name = "))
                    .map(str::to_string)
            })
            .collect();
        v.sort();
        v
    };
    let (_, defaults, _) = run("ganglion-agent", &["--print-default-config"]);
    let defaults = &defaults[defaults.find("[[collection_group]]").unwrap()..];
    // (The agent's defaults are gmond's compiled ones, which add cpu_steal,
    // mem_available and mem_sreclaimable to what Debian's file lists.)
    let ours = names(defaults);
    let imported = names(&toml);
    assert!(imported.iter().all(|n| ours.contains(n)), "{toml}");
    assert!(imported.len() >= 30, "{toml}");
    // Its ten groups (gmond's compiled defaults have an eleventh).
    assert_eq!(toml.matches("\n[[collection_group]]").count(), 10, "{toml}");
    assert!(toml.contains("# udp_listen = [\"0.0.0.0:8649\"]"), "{toml}");
}

#[test]
fn include_globs_on_disk_and_unreadable_input() {
    let dir = tempfile::tempdir().unwrap();
    let confd = dir.path().join("conf.d");
    std::fs::create_dir(&confd).unwrap();
    std::fs::write(
        confd.join("10-send.conf"),
        "udp_send_channel { host = agg.example port = 8650 }\n",
    )
    .unwrap();
    std::fs::write(
        confd.join("20-group.conf"),
        "collection_group { collect_every = 10 metric { name = \"load_one\" value_threshold = 0.5 } }\n",
    )
    .unwrap();
    std::fs::write(confd.join("ignored.txt"), "garbage {{{").unwrap();
    let main = dir.path().join("gmond.conf");
    std::fs::write(
        &main,
        format!(
            "cluster {{ name = \"c\" }}\ninclude (\"{}/*.conf\")\n",
            confd.display()
        ),
    )
    .unwrap();
    let (ok, toml, _) = run("ganglion-agent", &["import", main.to_str().unwrap()]);
    assert!(ok);
    assert!(toml.contains("host = \"agg.example\""), "{toml}");
    assert!(toml.contains("name = \"load_one\""), "{toml}");
    check("ganglion-agent", &toml);

    let missing = dir.path().join("nope.conf");
    let (ok, _, err) = run("ganglion-agent", &["import", missing.to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read"), "{err}");
    let (ok, _, err) = run(
        "ganglion-aggregator",
        &["import", missing.to_str().unwrap()],
    );
    assert!(!ok && err.contains("cannot read"), "{err}");
}
