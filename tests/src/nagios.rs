//! A private nagios4 (Debian's `nagios4-core`) for the integration tests:
//! a minimal `nagios.cfg` in a temp dir with its own command FIFO, status
//! file and log; started in the foreground and stopped by PID (SIGTERM,
//! then SIGKILL), the FIFO removed (Nagios leaves it behind). As root Nagios
//! drops to the `nagios` user, so the directory is given to that user.

use crate::{ChildGuard, require_binary, wait_until};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's plugin directory (`check_dummy` from monitoring-plugins-basic).
pub const PLUGIN_DIR: &str = "/usr/lib/nagios/plugins";

/// `ganglion-aggregator nagios-config` for `agg`, as a site would run it
/// (contact `tester`, plugins in `plugin_dir`); the objects printed.
pub fn nagios_config(agg: &crate::Aggregator, plugin_dir: &Path) -> String {
    let out = crate::output_ok(
        "nagios-config",
        Command::new(crate::workspace_bin("ganglion-aggregator"))
            .arg("--config")
            .arg(agg.dir.path().join("aggregator.toml"))
            .args(["nagios-config", "--url", &format!("http://{}", agg.http)])
            .args(["--contacts", "tester", "--plugin-dir"])
            .arg(plugin_dir),
    );
    String::from_utf8(out).unwrap()
}

/// A running private Nagios.
pub struct Nagios {
    /// Its directory (config, status, log, FIFO).
    pub dir: tempfile::TempDir,
    /// The external command FIFO (`rw/nagios.cmd`).
    pub command_file: PathBuf,
    guard: Option<ChildGuard>,
}

/// The objects every config needs besides the test's: a command, a
/// contact and a time period (Nagios refuses to start without a contact).
const BASE_OBJECTS: &str = "\
define timeperiod {\n    timeperiod_name 24x7\n    alias 24x7\n    sunday 00:00-24:00\n    monday 00:00-24:00\n    tuesday 00:00-24:00\n    wednesday 00:00-24:00\n    thursday 00:00-24:00\n    friday 00:00-24:00\n    saturday 00:00-24:00\n}\n\
define command {\n    command_name noop\n    command_line /bin/true\n}\n\
define contact {\n    contact_name tester\n    host_notifications_enabled 0\n    service_notifications_enabled 0\n    host_notification_period 24x7\n    service_notification_period 24x7\n    host_notification_options n\n    service_notification_options n\n    host_notification_commands noop\n    service_notification_commands noop\n}\n";

impl Nagios {
    /// A fresh directory for [`Nagios::start`]; its command FIFO will be
    /// `rw/nagios.cmd` (so an aggregator can be pointed at it first).
    pub fn prepare() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("nagios").tempdir().unwrap()
    }

    /// Starts nagios4 in `dir` (from [`Nagios::prepare`]) with `objects` (Nagios object definitions; may use
    /// the contact `tester`, the command `noop` and the period `24x7`) and
    /// `extra` nagios.cfg lines; returns once its command FIFO exists and
    /// the first status file is written. `files` are copied into the
    /// directory first (e.g. a plugin binary, made executable).
    pub fn start(
        dir: tempfile::TempDir,
        objects: &str,
        extra: &str,
        files: &[(&Path, &str)],
    ) -> Nagios {
        let bin = require_binary("nagios4");
        let d = dir.path();
        std::fs::create_dir_all(d.join("rw")).unwrap();
        std::fs::create_dir_all(d.join("spool")).unwrap();
        for (src, name) in files {
            let dst = d.join(name);
            std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
        std::fs::write(d.join("objects.cfg"), format!("{BASE_OBJECTS}{objects}")).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        let cfg = format!(
            "log_file={}\ncfg_file={}\nstatus_file={}\nstatus_update_interval=1\nobject_cache_file={}\n\
             precached_object_file={}\ncommand_file={}\nquery_socket={}\nlock_file={}\ntemp_file={}\n\
             temp_path={}\ncheck_result_path={}\nretain_state_information=0\nuse_syslog=0\ncheck_for_updates=0\n\
             log_service_retries=1\nlog_event_handlers=1\nlog_passive_checks=1\nlog_external_commands=1\n\
             check_result_reaper_frequency=1\nservice_freshness_check_interval=2\nhost_freshness_check_interval=2\n\
             check_host_freshness=1\ninterval_length=1\ncheck_workers=2\nillegal_macro_output_chars=`~$&|'\"<>\n{extra}\n",
            p("nagios.log"),
            p("objects.cfg"),
            p("status.dat"),
            p("objects.cache"),
            p("objects.precache"),
            p("rw/nagios.cmd"),
            p("rw/nagios.qh"),
            p("nagios.pid"),
            p("nagios.tmp"),
            d.display(),
            p("spool"),
        );
        std::fs::write(d.join("nagios.cfg"), cfg).unwrap();
        // As root, Nagios runs as `nagios` and must own its directory.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        if root {
            let st = Command::new("chown")
                .args(["-R", "nagios:nagios"])
                .arg(d)
                .status()
                .unwrap();
            assert!(st.success(), "chown nagios {}", d.display());
            // The temp dir itself is 0700; Nagios must be able to enter it.
            let st = Command::new("chmod")
                .args(["0755"])
                .arg(d)
                .status()
                .unwrap();
            assert!(st.success());
        }
        crate::output_ok(
            "nagios4 -v (the config)",
            Command::new(&bin).arg("-v").arg(d.join("nagios.cfg")),
        );
        let guard = ChildGuard::spawn(
            "nagios4",
            Command::new(&bin)
                .arg(d.join("nagios.cfg"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let n = Nagios {
            command_file: d.join("rw/nagios.cmd"),
            dir,
            guard: Some(guard),
        };
        wait_until(
            "nagios4's command FIFO and status.dat",
            Duration::from_secs(30),
            || (n.command_file.exists() && n.dir.path().join("status.dat").exists()).then_some(()),
        );
        n
    }

    /// `nagios.log` so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nagios.log")).unwrap_or_default()
    }

    /// Every `<kind> {` block of status.dat (`hoststatus`, `servicestatus`)
    /// as key → value maps.
    pub fn status_blocks(&self, kind: &str) -> Vec<HashMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.path().join("status.dat")).unwrap_or_default();
        let mut out = Vec::new();
        let mut cur: Option<HashMap<String, String>> = None;
        for line in text.lines() {
            let l = line.trim();
            if l == format!("{kind} {{") {
                cur = Some(HashMap::new());
            } else if l == "}" {
                if let Some(b) = cur.take() {
                    out.push(b);
                }
            } else if let (Some(b), Some((k, v))) = (cur.as_mut(), l.split_once('=')) {
                b.insert(k.to_string(), v.to_string());
            }
        }
        out
    }

    /// The status.dat block of host `host`.
    pub fn host(&self, host: &str) -> Option<HashMap<String, String>> {
        self.status_blocks("hoststatus")
            .into_iter()
            .find(|b| b.get("host_name").map(String::as_str) == Some(host))
    }

    /// The status.dat block of service `svc` on `host`.
    pub fn service(&self, host: &str, svc: &str) -> Option<HashMap<String, String>> {
        self.status_blocks("servicestatus").into_iter().find(|b| {
            b.get("host_name").map(String::as_str) == Some(host)
                && b.get("service_description").map(String::as_str) == Some(svc)
        })
    }
}

impl Drop for Nagios {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- nagios.log ---\n{}--- end ---", self.log());
        }
        if let Some(mut g) = self.guard.take()
            && g.terminate(Duration::from_secs(10)).is_none()
        {
            // The guard's drop kills it.
            eprintln!(
                "nagios4 (pid {}) ignored SIGTERM for 10 s; killing it",
                g.pid()
            );
        }
        // Nagios deletes status.dat and its socket but leaves the FIFO.
        let _ = std::fs::remove_file(&self.command_file);
    }
}
