//! Collectors for gmond's Linux metric set, computed as
//! `libmetrics/linux/metrics.c` does (see each module). Each /proc file stays
//! open and is re-read into a kept buffer ([`procfile`]) and parsed for just the
//! lines its metrics need. A failing source gives an error for that metric only.

pub mod cpu;
pub mod disk;
pub mod load;
pub mod mem;
pub mod net;
pub mod procfile;
pub mod system;

use ganglion_proto::xdr::Value;
use thiserror::Error;

/// Why a metric could not be collected this time.
#[derive(Debug, Error)]
pub enum CollectError {
    /// A /proc or /sys file could not be read or parsed.
    #[error("{source_name}: {message}")]
    Source {
        /// File or facility.
        source_name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Not enough history yet (e.g. the first network sample).
    #[error("no sample yet")]
    NotReady,
    /// The agent does not know this metric.
    #[error("unknown metric {0:?}")]
    Unknown(String),
}

pub(crate) fn src_err(source_name: &'static str, e: impl std::fmt::Display) -> CollectError {
    CollectError::Source {
        source_name,
        message: e.to_string(),
    }
}

/// Static facts the collectors report.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// `location` value.
    pub location: String,
    /// `gexec` ON/OFF.
    pub gexec: bool,
    /// Agent start time (the heartbeat value, as gmond sends its start time).
    pub started: u32,
}

/// All collectors, with the history their deltas need and their open files.
#[derive(Debug)]
pub struct Collector {
    facts: HostFacts,
    cpu: cpu::Cpu,
    load: load::Load,
    mem: mem::Mem,
    net: net::Net,
    disk: disk::Disk,
    system: system::System,
}

impl Collector {
    /// New collectors; the first CPU sample is a since-boot average, like gmond's.
    pub fn new(facts: HostFacts) -> Collector {
        Collector {
            facts,
            cpu: cpu::Cpu::default(),
            load: load::Load::default(),
            mem: mem::Mem::default(),
            net: net::Net::default(),
            disk: disk::Disk::default(),
            system: system::System::default(),
        }
    }

    /// Collects one metric now.
    pub fn collect(&mut self, name: &str) -> Result<Value, CollectError> {
        match name {
            "heartbeat" => Ok(Value::UInt(self.facts.started)),
            "location" => Ok(Value::Str(self.facts.location.clone())),
            "gexec" => Ok(Value::Str(
                if self.facts.gexec { "ON" } else { "OFF" }.into(),
            )),
            n if n.starts_with("cpu_") && n != "cpu_num" && n != "cpu_speed" => {
                self.cpu.collect(n).map(Value::Float)
            }
            "cpu_num" => self.system.cpu_num().map(Value::UShort),
            "cpu_speed" => self.system.cpu_speed().map(Value::UInt),
            "boottime" => self.cpu.boottime().map(Value::UInt),
            "machine_type" => Ok(Value::Str(system::machine_type().into())),
            "os_name" => Ok(Value::Str("Linux".into())),
            "os_release" => self.system.os_release().map(Value::Str),
            "mtu" => system::mtu().map(Value::UInt),
            "load_one" | "load_five" | "load_fifteen" => self.load.load(name).map(Value::Float),
            "proc_run" | "proc_total" => self.load.procs(name).map(Value::UInt),
            n if n.starts_with("mem_") || n.starts_with("swap_") => {
                self.mem.collect(n).map(Value::Float)
            }
            "bytes_in" | "bytes_out" | "pkts_in" | "pkts_out" => {
                self.net.collect(name).map(Value::Float)
            }
            "disk_total" => self.disk.totals().map(|t| Value::Double(t.total_gb)),
            "disk_free" => self.disk.totals().map(|t| Value::Double(t.free_gb)),
            "part_max_used" => self
                .disk
                .totals()
                .map(|t| Value::Float(t.max_used_pct as f32)),
            other => Err(CollectError::Unknown(other.into())),
        }
    }
}
