//! Interned texts and metric descriptions: the thousand hosts of a cluster
//! that send the same `load_one` metadata point at one [`Meta`].

use foldhash::HashSet;
use ganglion_proto::model::MetricMeta;
use std::sync::Arc;

use super::cut;

/// A metric description as many hosts share it. Every text in it is interned,
/// and the description itself is interned as a whole: the thousand hosts of a
/// cluster that send the same `load_one` metadata point at one `Meta`. The
/// per-host SPOOF_HOST extra is kept out of it (in the host's entry) so that
/// spoofed hosts share descriptions too.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Meta {
    pub(super) type_name: Arc<str>,
    pub(super) units: Arc<str>,
    pub(super) slope: u32,
    pub(super) tmax: u32,
    pub(super) dmax: u32,
    /// Extra data in print order (gmond prints reverse arrival order),
    /// SPOOF_HOST left out.
    pub(super) extras: Box<[(Arc<str>, Arc<str>)]>,
    /// Where the first SPOOF_HOST stood in print order.
    pub(super) spoof_at: Option<u16>,
}

/// Deduplicates the texts and descriptions held by the state. Entries nobody
/// else references any more are swept by the periodic cleanup.
#[derive(Debug, Default)]
pub(super) struct Interner {
    pub(super) strings: HashSet<Arc<str>>,
    pub(super) metas: HashSet<Arc<Meta>>,
}

impl Interner {
    pub(super) fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Interns a metadata message's description; returns it and the
    /// SPOOF_HOST value it carried.
    pub(super) fn meta(&mut self, m: MetricMeta) -> (Arc<Meta>, Option<Arc<str>>) {
        let units = cut(m.units, 255);
        let extras = m.extra.iter().rev().map(|(k, v)| (k.as_str(), v.as_str()));
        self.meta_parts(&m.type_name, &units, m.slope, m.tmax, m.dmax, extras)
    }

    /// As [`Interner::meta`], from borrowed parts with the extras already in
    /// print order (a polled document has them so): nothing is allocated
    /// when the description is known.
    pub(super) fn meta_parts<'a>(
        &mut self,
        type_name: &str,
        units: &str,
        slope: u32,
        tmax: u32,
        dmax: u32,
        extras_printed: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> (Arc<Meta>, Option<Arc<str>>) {
        let mut spoof = None;
        let mut spoof_at = None;
        let mut extras = Vec::new();
        for (k, v) in extras_printed {
            if spoof_at.is_none() && k == "SPOOF_HOST" {
                spoof_at = u16::try_from(extras.len()).ok();
                spoof = Some(self.str(v));
                continue;
            }
            extras.push((self.str(k), self.str(v)));
        }
        let meta = Meta {
            type_name: self.str(type_name),
            units: self.str(units),
            slope,
            tmax,
            dmax,
            extras: extras.into_boxed_slice(),
            spoof_at,
        };
        let meta = match self.metas.get(&meta) {
            Some(a) => a.clone(),
            None => {
                let a = Arc::new(meta);
                self.metas.insert(a.clone());
                a
            }
        };
        (meta, spoof)
    }

    /// Forgets what only the interner still holds.
    pub(super) fn sweep(&mut self) {
        self.metas.retain(|m| Arc::strong_count(m) > 1);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }
}
