//! Nagios' state machines, pure and allocation-free: a service's SOFT/HARD
//! transitions with flap detection, and a host's liveness.
//!
//! Service rules (Nagios 4.4.6 `base/checks.c`, reference §1.2):
//! OK→problem is SOFT attempt 1 (HARD at once when `max_check_attempts` is
//! 1); each further problem result while SOFT is the next attempt (an event
//! each time, as Nagios runs the handler on every soft attempt), HARD at
//! `max_check_attempts`; a repeated HARD problem is silent; a different
//! problem while HARD is a HARD change; OK while HARD is a recovery with the
//! attempt not yet reset; OK while SOFT is a soft recovery reported at
//! attempt + 1 (Nagios' quirk: `CRITICAL;SOFT;1` then `OK;SOFT;2`). After any
//! recovery the state is OK/HARD/1.
//!
//! Flap detection (`base/flapping.c`, reference §1.3): a history of the last
//! 21 recorded states (HARD results and soft recoveries; SOFT problems are
//! not recorded), the k-th of its 20 transitions from the oldest weighing
//! 0.75 + (k − 1)·0.5/19; percent = 100 · Σweights / 20. Flapping starts at
//! ≥ high and stops at ≤ low. The history lives in 42 bits of a `u64`
//! (2 bits a state, newest lowest), so a service's whole state is 24 bytes.
//! Hosts use the same history and weights, recording every check (UP 0,
//! DOWN 1), as Nagios records every actual host check.

use super::{EventKind, StateType};
use ganglion_proto::range::Status;

/// States kept in the flap history (Nagios' `MAX_STATE_HISTORY_ENTRIES`).
pub const HISTORY: u32 = 21;
const HISTORY_MASK: u64 = (1 << (2 * HISTORY)) - 1;

/// Flap thresholds in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapParams {
    /// Stop at or below.
    pub low: f64,
    /// Start at or above.
    pub high: f64,
}

/// One service (rule × host, or rule × cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcState {
    /// Current state.
    pub state: Status,
    /// HARD (else SOFT).
    pub hard: bool,
    /// Current attempt (1-based).
    pub attempt: u8,
    /// Flap detection says it flaps.
    pub flapping: bool,
    /// When the state last changed (unix seconds).
    pub since: i64,
    /// The last 21 recorded states, 2 bits each, newest in the lowest bits.
    pub history: u64,
}

impl Default for SvcState {
    fn default() -> Self {
        SvcState {
            state: Status::Ok,
            hard: true,
            attempt: 1,
            flapping: false,
            since: 0,
            // Nagios fills the history with the initial state (OK = 0).
            history: 0,
        }
    }
}

/// A state change to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// `Alert` or `Recovery` (services), `HostDown` or `HostUp` (hosts).
    pub kind: EventKind,
    /// SOFT or HARD as Nagios reports it.
    pub state_type: StateType,
    /// The attempt as Nagios reports it.
    pub attempt: u8,
}

/// What one result did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// The state change, if any.
    pub change: Option<Change>,
    /// `FlapStart` or `FlapStop`, if flapping changed.
    pub flap: Option<EventKind>,
    /// The percent state change, when the result was recorded in the history.
    pub percent: Option<f64>,
}

impl SvcState {
    /// SOFT or HARD.
    pub fn state_type(&self) -> StateType {
        if self.hard {
            StateType::Hard
        } else {
            StateType::Soft
        }
    }

    /// OK/HARD/1 and not flapping: nothing worth keeping across a restart.
    pub fn is_quiet(&self) -> bool {
        self.state == Status::Ok && self.hard && self.attempt == 1 && !self.flapping
    }

    /// Applies one check result.
    pub fn step(&mut self, r: Status, max: u8, now: i64, flap: Option<FlapParams>) -> Outcome {
        let max = max.max(1);
        let mut out = Outcome::default();
        let record;
        let change = |kind, hard: bool, attempt| Change {
            kind,
            state_type: if hard {
                StateType::Hard
            } else {
                StateType::Soft
            },
            attempt,
        };
        if self.state == Status::Ok {
            if r == Status::Ok {
                record = true;
            } else {
                self.state = r;
                self.since = now;
                self.attempt = 1;
                self.hard = max <= 1;
                record = self.hard;
                out.change = Some(change(EventKind::Alert, self.hard, 1));
            }
        } else if !self.hard {
            if r == Status::Ok {
                let reported = self.attempt.saturating_add(1).min(max);
                out.change = Some(change(EventKind::Recovery, false, reported));
                *self = SvcState {
                    since: now,
                    history: self.history,
                    flapping: self.flapping,
                    ..SvcState::default()
                };
                record = true;
            } else {
                if r != self.state {
                    self.state = r;
                    self.since = now;
                }
                self.attempt = self.attempt.saturating_add(1).min(max);
                self.hard = self.attempt >= max;
                record = self.hard;
                out.change = Some(change(EventKind::Alert, self.hard, self.attempt));
            }
        } else if r == Status::Ok {
            out.change = Some(change(EventKind::Recovery, true, self.attempt));
            self.state = Status::Ok;
            self.attempt = 1;
            self.since = now;
            record = true;
        } else {
            if r != self.state {
                self.state = r;
                self.since = now;
                out.change = Some(change(EventKind::Alert, true, self.attempt));
            }
            record = true;
        }
        if record {
            (out.percent, out.flap) = record_state(
                &mut self.history,
                &mut self.flapping,
                self.state.code(),
                flap,
            );
        }
        out
    }
}

/// Adds state `code` to a flap history and applies the thresholds: the
/// percent state change (when flap detection is on) and `FlapStart` or
/// `FlapStop` when the flag changed.
fn record_state(
    history: &mut u64,
    flapping: &mut bool,
    code: u8,
    flap: Option<FlapParams>,
) -> (Option<f64>, Option<EventKind>) {
    let before = *history;
    *history = ((before << 2) | u64::from(code & 3)) & HISTORY_MASK;
    let Some(p) = flap else {
        return (None, None);
    };
    // An unchanged uniform history changes nothing: skip the sum.
    let pct = if before == *history && transitions(before) == 0 {
        0.0
    } else {
        percent_state_change(*history)
    };
    let mut change = None;
    if !*flapping && pct >= p.high {
        *flapping = true;
        change = Some(EventKind::FlapStart);
    } else if *flapping && pct <= p.low {
        *flapping = false;
        change = Some(EventKind::FlapStop);
    }
    (Some(pct), change)
}

/// Bit pairs that differ from their older neighbour (20 transitions).
fn transitions(h: u64) -> u64 {
    let diff = (h ^ (h >> 2)) & ((1 << (2 * (HISTORY - 1))) - 1);
    (diff | (diff >> 1)) & 0x5555_5555_5555_5555
}

/// Nagios' weighted percent state change of a history (see the module doc).
pub fn percent_state_change(h: u64) -> f64 {
    let t = transitions(h);
    if t == 0 {
        return 0.0;
    }
    let mut sum = 0.0;
    // Pair i (bits 2i) compares entry i with entry i + 1 (older); entry 0 is
    // the newest, so pair i is transition k = 20 − i counting from the oldest.
    for i in 0..(HISTORY - 1) {
        if t >> (2 * i) & 1 == 1 {
            let k = f64::from(HISTORY - 1 - i);
            sum += 0.75 + (k - 1.0) * 0.5 / f64::from(HISTORY - 2);
        }
    }
    sum * 100.0 / f64::from(HISTORY - 1)
}

/// A host's liveness state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    /// UP (else DOWN).
    pub up: bool,
    /// HARD (else SOFT).
    pub hard: bool,
    /// Current attempt.
    pub attempt: u8,
    /// When the state last changed.
    pub since: i64,
    /// Flap detection says it flaps.
    pub flapping: bool,
    /// The last 21 checks (UP 0, DOWN 1), 2 bits each, newest lowest.
    pub history: u64,
}

impl Default for HostState {
    fn default() -> Self {
        HostState {
            up: true,
            hard: true,
            attempt: 1,
            since: 0,
            flapping: false,
            history: 0,
        }
    }
}

impl HostState {
    /// SOFT or HARD.
    pub fn state_type(&self) -> StateType {
        if self.hard {
            StateType::Hard
        } else {
            StateType::Soft
        }
    }

    /// Applies one liveness result ([`HostState::step`]) and records it in
    /// the flap history (every check counts, as Nagios counts every host
    /// check): `change` as `step` says, `flap`/`percent` as for services.
    pub fn check(&mut self, up: bool, max: u8, now: i64, flap: Option<FlapParams>) -> Outcome {
        let change = self.step(up, max, now);
        let (percent, flap) =
            record_state(&mut self.history, &mut self.flapping, u8::from(!up), flap);
        Outcome {
            change,
            flap,
            percent,
        }
    }

    /// Applies one liveness result. Only HARD changes are reported: a host
    /// going DOWN is confirmed by `max` consecutive results (SOFT attempts
    /// are visible in the health, not as events, so storm control can see a
    /// whole cluster fall before any host is announced), and UP is reported
    /// only after a HARD DOWN.
    pub fn step(&mut self, up: bool, max: u8, now: i64) -> Option<Change> {
        let max = max.max(1);
        let hard_change = |kind, attempt| Change {
            kind,
            state_type: StateType::Hard,
            attempt,
        };
        match (self.up, up) {
            (true, true) => None,
            (true, false) => {
                *self = HostState {
                    up: false,
                    hard: max <= 1,
                    attempt: 1,
                    since: now,
                    ..*self
                };
                self.hard.then(|| hard_change(EventKind::HostDown, 1))
            }
            (false, false) if self.hard => None,
            (false, false) => {
                self.attempt = self.attempt.saturating_add(1).min(max);
                self.hard = self.attempt >= max;
                self.hard
                    .then(|| hard_change(EventKind::HostDown, self.attempt))
            }
            (false, true) => {
                let was_hard = self.hard;
                let attempt = self.attempt;
                *self = HostState {
                    since: now,
                    flapping: self.flapping,
                    history: self.history,
                    ..HostState::default()
                };
                was_hard.then(|| hard_change(EventKind::HostUp, attempt))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Critical, Ok as OK, Warning};

    fn run(s: &mut SvcState, r: Status, max: u8) -> Option<(EventKind, StateType, u8)> {
        s.step(r, max, 0, None)
            .change
            .map(|c| (c.kind, c.state_type, c.attempt))
    }

    use EventKind::{Alert, Recovery};
    use StateType::{Hard, Soft};

    #[test]
    fn soft_attempts_then_hard_then_silence_then_recovery_at_max() {
        // Reference §1.2's measured run, max_check_attempts 3.
        let mut s = SvcState::default();
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Soft, 1)));
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Soft, 2)));
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Hard, 3)));
        assert_eq!(run(&mut s, Critical, 3), None);
        assert_eq!(run(&mut s, OK, 3), Some((Recovery, Hard, 3)));
        assert_eq!((s.state, s.hard, s.attempt), (OK, true, 1));
        assert_eq!(run(&mut s, OK, 3), None);
    }

    #[test]
    fn soft_recovery_reports_the_next_attempt() {
        let mut s = SvcState::default();
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Soft, 1)));
        assert_eq!(run(&mut s, OK, 3), Some((Recovery, Soft, 2)));
        assert_eq!(run(&mut s, OK, 3), None);
        assert!(s.is_quiet());
    }

    #[test]
    fn one_attempt_is_hard_at_once() {
        let mut s = SvcState::default();
        assert_eq!(run(&mut s, Warning, 1), Some((Alert, Hard, 1)));
        assert_eq!(run(&mut s, Warning, 1), None);
        assert_eq!(run(&mut s, OK, 1), Some((Recovery, Hard, 1)));
    }

    #[test]
    fn a_different_problem_is_a_change_soft_or_hard() {
        let mut s = SvcState::default();
        assert_eq!(run(&mut s, Warning, 3), Some((Alert, Soft, 1)));
        // While SOFT the attempt counts on across problem states.
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Soft, 2)));
        assert_eq!(s.state, Critical);
        assert_eq!(run(&mut s, Critical, 3), Some((Alert, Hard, 3)));
        // HARD WARNING after HARD CRITICAL: a hard state change, attempt kept.
        assert_eq!(run(&mut s, Warning, 3), Some((Alert, Hard, 3)));
        assert_eq!(run(&mut s, Warning, 3), None);
        assert_eq!(run(&mut s, Status::Unknown, 3), Some((Alert, Hard, 3)));
    }

    #[test]
    fn since_moves_only_on_state_changes() {
        let mut s = SvcState::default();
        s.step(Critical, 3, 100, None);
        s.step(Critical, 3, 115, None);
        s.step(Critical, 3, 130, None);
        assert_eq!(s.since, 100);
        s.step(OK, 3, 145, None);
        assert_eq!(s.since, 145);
    }

    #[test]
    fn flapping_starts_on_the_fourth_change_at_24_2_percent() {
        // Reference §1.3, measured: thresholds 5/20, alternating 2/0 with
        // max_check_attempts 1 → 6.25, 12.37, 18.36, 24.21 (start).
        let p = Some(FlapParams {
            low: 5.0,
            high: 20.0,
        });
        let mut s = SvcState::default();
        let mut seen = Vec::new();
        for (i, r) in [Critical, OK, Critical, OK].into_iter().enumerate() {
            let o = s.step(r, 1, i as i64, p);
            seen.push((o.percent.unwrap() * 100.0).round() / 100.0);
            assert_eq!(
                o.flap.is_some(),
                i == 3,
                "flap start only on the 4th change"
            );
        }
        assert_eq!(seen, vec![6.25, 12.37, 18.36, 24.21]);
        assert!(s.flapping);
        // Two more changes: 35.53 as measured.
        s.step(Critical, 1, 5, p);
        let o = s.step(OK, 1, 6, p);
        assert_eq!((o.percent.unwrap() * 100.0).round() / 100.0, 35.53);
        assert_eq!(o.flap, None);
    }

    #[test]
    fn flapping_stops_at_or_below_low_after_a_quiet_spell() {
        let p = Some(FlapParams {
            low: 5.0,
            high: 20.0,
        });
        let mut s = SvcState::default();
        for r in [Critical, OK, Critical, OK] {
            s.step(r, 1, 0, p);
        }
        assert!(s.flapping);
        let mut stop_at = None;
        for i in 0..21 {
            let o = s.step(OK, 1, 0, p);
            if o.flap == Some(EventKind::FlapStop) {
                stop_at = Some((i, o.percent.unwrap()));
                break;
            }
            assert!(o.percent.unwrap() > 5.0, "stops as soon as ≤ low");
        }
        let (_, pct) = stop_at.expect("flapping stops within 21 OK results");
        assert!(pct <= 5.0);
        assert!(!s.flapping);
    }

    #[test]
    fn soft_problems_are_not_recorded_in_the_history() {
        let mut s = SvcState::default();
        let p = Some(FlapParams {
            low: 5.0,
            high: 20.0,
        });
        assert_eq!(s.step(Critical, 3, 0, p).percent, None);
        assert_eq!(s.step(Critical, 3, 0, p).percent, None);
        assert!(
            s.step(Critical, 3, 0, p).percent.is_some(),
            "HARD is recorded"
        );
        assert_eq!(percent_state_change(s.history), 6.25);
    }

    #[test]
    fn history_weights_span_0_75_to_1_25() {
        // Oldest transition only: entry 20 differs from entry 19.
        let h = 0b10 << (2 * 20);
        assert_eq!(percent_state_change(h), 0.75 * 100.0 / 20.0);
        assert_eq!(percent_state_change(0b10), 1.25 * 100.0 / 20.0);
    }

    #[test]
    fn host_down_is_reported_when_hard_and_up_only_after_hard_down() {
        let mut h = HostState::default();
        assert_eq!(h.step(false, 3, 10), None);
        assert_eq!((h.up, h.hard, h.attempt), (false, false, 1));
        assert_eq!(h.step(false, 3, 25), None);
        let c = h.step(false, 3, 40).unwrap();
        assert_eq!(
            (c.kind, c.state_type, c.attempt),
            (EventKind::HostDown, Hard, 3)
        );
        assert_eq!(h.since, 10, "DOWN since the first failed check");
        assert_eq!(h.step(false, 3, 55), None);
        let c = h.step(true, 3, 70).unwrap();
        assert_eq!(c.kind, EventKind::HostUp);
        assert_eq!((h.up, h.hard, h.attempt, h.since), (true, true, 1, 70));
        // A soft DOWN that comes back is silent.
        assert_eq!(h.step(false, 3, 80), None);
        assert_eq!(h.step(true, 3, 90), None);
        // max 1: HARD at once.
        let c = h.step(false, 1, 100).unwrap();
        assert_eq!((c.kind, c.attempt), (EventKind::HostDown, 1));
    }

    #[test]
    fn a_host_flaps_with_the_services_weights_counting_every_check() {
        let p = Some(FlapParams {
            low: 5.0,
            high: 20.0,
        });
        let mut h = HostState::default();
        // Alternating checks with max 3: the host never gets HARD DOWN, yet
        // every check is recorded, so it flaps on the 4th change as a
        // service does (6.25, 12.37, 18.36, 24.21).
        let mut seen = Vec::new();
        for (i, up) in [false, true, false, true].into_iter().enumerate() {
            let o = h.check(up, 3, i as i64, p);
            assert_eq!(o.change, None, "soft DOWNs are not announced");
            seen.push((o.percent.unwrap() * 100.0).round() / 100.0);
            assert_eq!(o.flap.is_some(), i == 3);
        }
        assert_eq!(seen, vec![6.25, 12.37, 18.36, 24.21]);
        assert!(h.flapping);
        // Flapping survives the state changes and stops after a quiet spell.
        let mut stopped = None;
        for i in 0..21 {
            let o = h.check(true, 3, 10 + i, p);
            if o.flap == Some(EventKind::FlapStop) {
                stopped = Some(o.percent.unwrap());
                break;
            }
            assert!(h.flapping);
        }
        assert!(stopped.expect("stops within 21 UP checks") <= 5.0);
        assert!(!h.flapping);
        // Off: recorded, never flapping.
        let mut h = HostState::default();
        for up in [false, true, false, true, false, true] {
            let o = h.check(up, 1, 0, None);
            assert_eq!((o.flap, o.percent), (None, None));
        }
        assert!(!h.flapping);
        assert!(percent_state_change(h.history) > 20.0);
    }
}
