//! `scripts/install-deps.sh`, the first thing the README's two commands run,
//! driven through its exit paths with shims for the package tools: it must
//! exit 0 after a good install whether or not a `policy-rc.d` was there
//! (Debian container images ship one), put back whatever policy it found,
//! never stop or kill a Ganglia that was running before it, and touch only
//! the service units of packages it installed itself.
//!
//! The shims record every call in a log; `apt-get install` "installs" by
//! adding the package to the shim dpkg database and, like a maintainer
//! script, asks the policy whether it may start the package's service.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Scratch {
    dir: tempfile::TempDir,
}

const SHIM_DPKG_QUERY: &str = r#"#!/bin/sh
# dpkg-query -W -f='${Status}' PKG
pkg=""; for a in "$@"; do pkg="$a"; done
echo "dpkg-query $pkg" >> "$SHIM_LOG"
if grep -qx "$pkg" "$SHIM_DB"; then printf 'install ok installed'; exit 0; fi
exit 1
"#;

const SHIM_APT_GET: &str = r#"#!/bin/sh
echo "apt-get $*" >> "$SHIM_LOG"
[ "$1" = update ] && exit 0
[ -n "$SHIM_APT_FAIL" ] && exit 100
for a in "$@"; do
  case "$a" in -*|install) continue ;; esac
  echo "$a" >> "$SHIM_DB"
  case "$a" in
    ganglia-monitor|gmetad|rrdcached)
      rc=0; "$GANGLION_POLICY_RC_D" "$a" start >/dev/null 2>&1 || rc=$?
      if [ "$rc" -eq 101 ]; then echo "postinst $a start forbidden" >> "$SHIM_LOG";
      else echo "postinst $a STARTED" >> "$SHIM_LOG"; fi ;;
  esac
done
exit 0
"#;

const SHIM_RECORD: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$SHIM_LOG"
exit 0
"#;

const SHIM_SUDO: &str = r#"#!/bin/sh
exec "$@"
"#;

const DENYING_POLICY: &str = "#!/bin/sh\n# the image's own\nexit 101\n";
const ALLOWING_POLICY: &str = "#!/bin/sh\n# the site's own, allows starts\nexit 0\n";

impl Scratch {
    fn new(installed: &[&str]) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for (name, body) in [
            ("dpkg-query", SHIM_DPKG_QUERY),
            ("apt-get", SHIM_APT_GET),
            ("systemctl", SHIM_RECORD),
            ("service", SHIM_RECORD),
            ("pkill", SHIM_RECORD),
            ("killall", SHIM_RECORD),
            ("update-rc.d", SHIM_RECORD),
            ("sudo", SHIM_SUDO),
            // npm present: Debian's nodejs is not asked for.
            ("npm", SHIM_RECORD),
        ] {
            write_exec(&bin.join(name), body);
        }
        let mut db = installed.join("\n");
        db.push('\n');
        fs::write(dir.path().join("db"), db).unwrap();
        fs::write(dir.path().join("log"), "").unwrap();
        Scratch { dir }
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy-rc.d")
    }

    fn run(&self, mode: &str, extra_env: &[(&str, &str)]) -> (i32, String) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-deps.sh");
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(mode)
            .env("PATH", path)
            .env("SHIM_LOG", self.dir.path().join("log"))
            .env("SHIM_DB", self.dir.path().join("db"))
            .env("GANGLION_POLICY_RC_D", self.policy())
            .env("GANGLION_INSTALL_LOCK", self.dir.path().join("lock"))
            .env(
                "GANGLION_SYSTEMD_RUNDIR",
                self.dir.path().join("no-systemd-here"),
            )
            // No MTA unless a test makes this file.
            .env("GANGLION_SENDMAIL", self.dir.path().join("sendmail"))
            .stdin(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run install-deps.sh");
        let log = fs::read_to_string(self.dir.path().join("log")).unwrap();
        let code = out.status.code().unwrap_or(-1);
        eprintln!(
            "exit {code}\nstderr:\n{}\ncalls:\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, log)
    }
}

fn write_exec(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every build and test package, with whether it brings a service, as
/// `install-deps.sh list` prints them (the lists live only in the script).
fn packages() -> Vec<(String, bool)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-deps.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success(), "install-deps.sh list failed");
    let list: Vec<(String, bool)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next().is_some()))
        })
        .collect();
    for must in [
        "librrd-dev",
        "ganglia-monitor",
        "gmetad",
        "rrdcached",
        "chromium",
    ] {
        assert!(list.iter().any(|(p, _)| p == must), "{must} not listed");
    }
    list
}

/// Every build and test package but those that bring services.
fn all_but_services() -> Vec<String> {
    packages()
        .into_iter()
        .filter(|(_, service)| !service)
        .map(|(p, _)| p)
        .collect()
}

fn assert_nothing_stopped(log: &str) {
    for forbidden in ["service ", "pkill", "killall", "systemctl stop", "STARTED"] {
        assert!(
            !log.lines()
                .any(|l| l.starts_with(forbidden) || l.contains(forbidden)),
            "the installer ran `{forbidden}…`:\n{log}"
        );
    }
}

#[test]
fn a_preexisting_policy_is_kept_and_the_run_succeeds_beside_a_running_gmond() {
    let s = Scratch::new(&[]);
    fs::write(s.policy(), DENYING_POLICY).unwrap();
    fs::set_permissions(s.policy(), fs::Permissions::from_mode(0o755)).unwrap();

    // A "gmond" that was running before: a copy of sleep under gmond's name,
    // so a `pkill -x gmond` anywhere would hit it.
    let gmond = s.dir.path().join("gmond");
    fs::copy("/bin/sleep", &gmond).unwrap();
    let mut running = KillOnDrop(
        Command::new(&gmond)
            .arg("600")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a gmond"),
    );

    let (code, log) = s.run("test", &[]);
    assert_eq!(
        code, 0,
        "a good install with an existing policy-rc.d must exit 0"
    );
    assert!(
        log.contains("apt-get install"),
        "packages were installed:\n{log}"
    );
    assert_eq!(
        fs::read_to_string(s.policy()).unwrap(),
        DENYING_POLICY,
        "the image's policy-rc.d is left as it was"
    );
    assert!(
        log.contains("postinst gmetad start forbidden"),
        "services stayed down:\n{log}"
    );
    assert_nothing_stopped(&log);
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "the gmond that was running before is still running"
    );
}

/// The stand-in gmond is stopped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[test]
fn without_a_policy_one_is_in_place_for_the_install_and_removed_after() {
    let s = Scratch::new(&[]);
    let (code, log) = s.run("test", &[]);
    assert_eq!(code, 0);
    assert!(
        log.contains("postinst ganglia-monitor start forbidden"),
        "{log}"
    );
    assert!(
        !s.policy().exists(),
        "the policy written for the install is removed"
    );
    assert_nothing_stopped(&log);
}

#[test]
fn a_policy_that_allows_starts_is_set_aside_and_restored_byte_for_byte() {
    let s = Scratch::new(&[]);
    fs::write(s.policy(), ALLOWING_POLICY).unwrap();
    fs::set_permissions(s.policy(), fs::Permissions::from_mode(0o755)).unwrap();
    let (code, log) = s.run("test", &[]);
    assert_eq!(code, 0);
    assert!(log.contains("postinst rrdcached start forbidden"), "{log}");
    assert_eq!(fs::read_to_string(s.policy()).unwrap(), ALLOWING_POLICY);
    assert!(!s.dir.path().join("policy-rc.d.ganglion-saved").exists());
}

#[test]
fn nothing_missing_means_no_apt_and_success() {
    let all: Vec<String> = packages().into_iter().map(|(p, _)| p).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let s = Scratch::new(&all);
    let (code, log) = s.run("test", &[]);
    assert_eq!(code, 0);
    assert!(!log.contains("apt-get"), "{log}");
    assert!(!s.policy().exists());
}

#[test]
fn a_failed_install_exits_nonzero_and_still_restores_the_policy() {
    let s = Scratch::new(&[]);
    fs::write(s.policy(), ALLOWING_POLICY).unwrap();
    fs::set_permissions(s.policy(), fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _log) = s.run("build", &[("SHIM_APT_FAIL", "1")]);
    assert_ne!(code, 0, "a failed apt-get install is a failure");
    assert_eq!(fs::read_to_string(s.policy()).unwrap(), ALLOWING_POLICY);
}

#[test]
fn on_systemd_only_the_units_this_run_installed_are_masked() {
    // ganglia-monitor was already installed (the site's gmond): only gmetad
    // and rrdcached are new, so only they are masked.
    let pre = all_but_services();
    let mut pre: Vec<&str> = pre.iter().map(String::as_str).collect();
    pre.push("ganglia-monitor");
    let s = Scratch::new(&pre);
    let rundir = s.dir.path().join("systemd");
    fs::create_dir(&rundir).unwrap();
    let (code, log) = s.run(
        "test",
        &[("GANGLION_SYSTEMD_RUNDIR", rundir.to_str().unwrap())],
    );
    assert_eq!(code, 0);
    assert!(log.contains("systemctl mask gmetad.service"), "{log}");
    assert!(log.contains("systemctl mask rrdcached.service"), "{log}");
    assert!(
        !log.contains("ganglia-monitor.service"),
        "the site's gmond unit is not touched:\n{log}"
    );
}

#[test]
fn an_unknown_mode_is_a_usage_error() {
    let s = Scratch::new(&[]);
    let (code, _) = s.run("everything", &[]);
    assert_eq!(code, 2);
}

#[test]
fn nagios_gets_a_listener_free_mta_only_where_there_is_none() {
    // No MTA: dma is installed beside nagios4-core, so apt does not pick exim4.
    let bare = Scratch::new(&[]);
    let (code, log) = bare.run("test", &[]);
    assert_eq!(code, 0, "{log}");
    let install = log
        .lines()
        .find(|l| l.starts_with("apt-get install"))
        .unwrap_or_default();
    assert!(install.contains(" nagios4-core"), "{log}");
    assert!(install.contains(" dma"), "{log}");
    // A machine with its own MTA keeps it: dma would replace it.
    let site = Scratch::new(&[]);
    fs::write(site.dir.path().join("sendmail"), "").unwrap();
    let (code, log) = site.run("test", &[]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains(" dma"), "{log}");
    // Nothing to install for nagios: no MTA is added either.
    let all: Vec<String> = packages().into_iter().map(|(p, _)| p).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let done = Scratch::new(&all);
    let (code, log) = done.run("test", &[]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("apt-get"), "{log}");
}
