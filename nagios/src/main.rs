//! `check_ganglion`: CLI glue only (see the library for the check itself).

use ganglion_nagios::{Outcome, cli};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once the answer is printed, so the watchdog never prints a second one.
static ANSWERED: AtomicBool = AtomicBool::new(false);

fn answer(o: &Outcome) -> ExitCode {
    if ANSWERED.swap(true, Ordering::SeqCst) {
        // The watchdog got there first and is exiting the process.
        std::thread::park();
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(o.render().as_bytes());
    let _ = out.flush();
    ExitCode::from(o.status.code())
}

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args_os()) {
        Ok(o) => o,
        Err(o) => return answer(&o),
    };
    // The client's own deadline covers connect, send and read; name
    // resolution has none in std, so a backstop answers UNKNOWN a moment
    // after the timeout whatever the main thread is stuck in.
    let timeout = opts.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(timeout + Duration::from_millis(500));
        if !ANSWERED.swap(true, Ordering::SeqCst) {
            let o = Outcome::unknown(format!(
                "no answer within {} s (-t/--timeout)",
                timeout.as_secs()
            ));
            let _ = std::io::stdout().write_all(o.render().as_bytes());
            let _ = std::io::stdout().flush();
            std::process::exit(3);
        }
    });
    answer(&ganglion_nagios::run(&opts))
}
