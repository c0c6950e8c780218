//! Replay windows, checked only after a datagram's tag verified.
//!
//! [`Window`] is RFC 6479's ring bitmap: 1024 bits in 16 words, of which
//! [`WINDOW`] = 960 counters below the highest are tracked (one word is the
//! slack that makes sliding a word at a time possible). It tolerates any
//! reordering within those 960 and refuses every repeat. 136 bytes.
//!
//! [`Sparse`] serves one-shot senders, whose counter is a clock in ns: it
//! remembers the last [`SPARSE`] counters it accepted and a floor below
//! which everything is refused, so a repeat is always either remembered or
//! under the floor. 520 bytes.

/// Counters tracked below the highest by [`Window`].
pub const WINDOW: u64 = 1024 - 64;
const WORDS: usize = 16;

/// What a window says about a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and above the highest so far.
    Ahead,
    /// New, below the highest (arrived out of order).
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too far behind the highest to tell: refused.
    TooOld,
}

impl Verdict {
    /// Whether the datagram is accepted.
    pub fn accepted(self) -> bool {
        matches!(self, Verdict::Ahead | Verdict::Reordered)
    }
}

/// RFC 6479 sliding window over a 64-bit counter.
#[derive(Debug, Clone)]
pub struct Window {
    top: u64,
    bits: [u64; WORDS],
}

impl Window {
    /// A window whose first accepted counter is `first`.
    pub fn starting_at(first: u64) -> Window {
        let mut w = Window {
            top: first,
            bits: [0; WORDS],
        };
        w.set(first);
        w
    }

    /// A window for an epoch seen from its start: counter 0 not yet seen.
    pub fn fresh() -> Window {
        Window {
            top: 0,
            bits: [0; WORDS],
        }
    }

    /// The highest counter accepted (0 for a fresh window).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn slot(c: u64) -> (usize, u64) {
        (((c >> 6) as usize) % WORDS, 1u64 << (c & 63))
    }

    fn set(&mut self, c: u64) {
        let (i, b) = Self::slot(c);
        self.bits[i] |= b;
    }

    /// What `c` would be, without changing anything.
    pub fn check(&self, c: u64) -> Verdict {
        if c > self.top {
            return Verdict::Ahead;
        }
        if self.top - c >= WINDOW {
            return Verdict::TooOld;
        }
        let (i, b) = Self::slot(c);
        if self.bits[i] & b != 0 {
            Verdict::Duplicate
        } else if c == self.top {
            // Only a fresh window (nothing seen) has an unset top.
            Verdict::Ahead
        } else {
            Verdict::Reordered
        }
    }

    /// Checks `c` and records it when accepted.
    pub fn accept(&mut self, c: u64) -> Verdict {
        let v = self.check(c);
        if v.accepted() {
            if c > self.top {
                let from = (self.top >> 6) + 1;
                let to = c >> 6;
                // Clear the words slid over (at most all of them).
                let n = (to + 1).saturating_sub(from).min(WORDS as u64);
                for k in 0..n {
                    let i = ((from + k) as usize) % WORDS;
                    self.bits[i] = 0;
                }
                self.top = c;
            }
            self.set(c);
        }
        v
    }
}

/// Counters remembered by [`Sparse`].
pub const SPARSE: usize = 64;

/// The window of a one-shot stream: the last [`SPARSE`] accepted counters
/// and a floor (the largest counter forgotten).
#[derive(Debug, Clone)]
pub struct Sparse {
    recent: Vec<u64>,
    floor: Option<u64>,
}

impl Default for Sparse {
    fn default() -> Self {
        Sparse {
            recent: Vec::with_capacity(SPARSE),
            floor: None,
        }
    }
}

impl Sparse {
    /// A window that refuses every counter up to `floor` (restored from the
    /// persisted sender state).
    pub fn refusing_through(floor: u64) -> Sparse {
        Sparse {
            recent: Vec::with_capacity(SPARSE),
            floor: Some(floor),
        }
    }

    /// The highest counter accepted or refused as too old so far.
    pub fn top(&self) -> Option<u64> {
        self.recent.iter().copied().chain(self.floor).max()
    }

    /// What `c` would be, without changing anything.
    pub fn check(&self, c: u64) -> Verdict {
        if self.floor.is_some_and(|f| c <= f) {
            return Verdict::TooOld;
        }
        if self.recent.contains(&c) {
            return Verdict::Duplicate;
        }
        if self.recent.iter().any(|&r| r > c) {
            Verdict::Reordered
        } else {
            Verdict::Ahead
        }
    }

    /// Checks `c` and records it when accepted.
    pub fn accept(&mut self, c: u64) -> Verdict {
        let v = self.check(c);
        if v.accepted() {
            if self.recent.len() >= SPARSE
                && let Some((i, &min)) = self.recent.iter().enumerate().min_by_key(|(_, r)| **r)
            {
                // Forgetting a counter raises the floor to it, so it can
                // never be accepted again.
                self.floor = Some(self.floor.map_or(min, |f| f.max(min)));
                self.recent.swap_remove(i);
            }
            self.recent.push(c);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_reordered_edge_behind_duplicate_and_jump() {
        let mut w = Window::fresh();
        assert_eq!(w.accept(0), Verdict::Ahead);
        assert_eq!(w.accept(0), Verdict::Duplicate);
        assert_eq!(w.accept(5), Verdict::Ahead);
        assert_eq!(w.accept(3), Verdict::Reordered);
        assert_eq!(w.accept(3), Verdict::Duplicate);
        assert_eq!(w.accept(2000), Verdict::Ahead);
        // Exactly at the edge: 2000 - 1041 = 959 < WINDOW is tracked.
        assert_eq!(w.accept(2000 - (WINDOW - 1)), Verdict::Reordered);
        assert_eq!(w.accept(2000 - WINDOW), Verdict::TooOld);
        assert_eq!(w.accept(5), Verdict::TooOld);
        // A jump beyond the ring clears it entirely.
        assert_eq!(w.accept(1 << 40), Verdict::Ahead);
        assert_eq!(w.accept((1 << 40) - 1), Verdict::Reordered);
        assert_eq!(w.accept(u64::MAX), Verdict::Ahead);
        assert_eq!(w.accept(u64::MAX), Verdict::Duplicate);
    }

    #[test]
    fn sparse_never_accepts_twice_and_tolerates_disorder() {
        let mut s = Sparse::default();
        assert_eq!(s.accept(100), Verdict::Ahead);
        assert_eq!(s.accept(50), Verdict::Reordered);
        assert_eq!(s.accept(100), Verdict::Duplicate);
        for c in 200..300 {
            assert!(s.accept(c).accepted());
        }
        // 50 and 100 were forgotten, under the floor now.
        assert_eq!(s.accept(50), Verdict::TooOld);
        assert_eq!(s.accept(100), Verdict::TooOld);
        assert_eq!(s.accept(299), Verdict::Duplicate);
    }

    /// The model: a set of every counter accepted, and the highest; a
    /// counter is acceptable when unseen and within WINDOW of the highest.
    struct Model {
        seen: HashSet<u64>,
        top: Option<u64>,
    }

    impl Model {
        fn accept(&mut self, c: u64) -> bool {
            let ok = !self.seen.contains(&c) && self.top.is_none_or(|t| c > t || t - c < WINDOW);
            if ok {
                self.seen.insert(c);
                self.top = Some(self.top.map_or(c, |t| t.max(c)));
            }
            ok
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Counters near each other (reordering, duplicates, small and
        /// large jumps): the window agrees with the model on every one.
        #[test]
        fn window_matches_a_set_of_seen_counters(
            start in 0u64..1 << 50,
            steps in prop::collection::vec(-1500i64..3000, 1..400),
        ) {
            let mut w = Window::fresh();
            let mut m = Model { seen: HashSet::new(), top: None };
            let mut c = start;
            for s in steps {
                c = c.saturating_add_signed(s);
                prop_assert_eq!(w.accept(c).accepted(), m.accept(c), "counter {}", c);
            }
        }

        /// Sparse: never accepts a counter twice, and accepts every new
        /// counter above everything it forgot.
        #[test]
        fn sparse_accepts_each_counter_at_most_once(
            cs in prop::collection::vec(0u64..500, 1..600),
        ) {
            let mut s = Sparse::default();
            let mut seen = HashSet::new();
            for c in cs {
                let before = s.floor;
                let ok = s.accept(c).accepted();
                if ok {
                    prop_assert!(seen.insert(c), "{} accepted twice", c);
                } else {
                    prop_assert!(seen.contains(&c) || before.is_some_and(|f| c <= f));
                }
            }
        }
    }
}
