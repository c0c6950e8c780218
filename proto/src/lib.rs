//! Ganglia's wire protocol and data model, shared by every Ganglion component.
//!
//! - [`xdr`]: the Ganglia ≥ 3.1 XDR codec (messages 128–136), byte-exact with
//!   gmond/gmetric 3.7.2.
//! - [`format`](mod@format): renders a value with its sender's printf-style `fmt` without
//!   ever calling a real printf.
//! - [`range`]: monitoring-plugins threshold ranges (`10`, `10:`, `~:10`,
//!   `@10:20`) and the four plugin states.
//! - [`model`]: metric types, slopes and metadata shared by agent and aggregator.
//! - [`envelope`]: the authenticated envelope v1 around an XDR message
//!   (header codec, seal, open; `ring` AEADs).
//! - [`xml`]: gmond/gmetad XML — a streaming writer that is always well-formed and
//!   a streaming reader that tolerates what real Ganglia emits.
//!
//! This crate does no IO beyond `std::io::Read`/`Write` it is handed, has no
//! async runtime and no logging, and never panics on any input.
//!
//! "Never panics" is machine-checked: outside tests, clippy warns on indexing,
//! unchecked arithmetic, `unwrap`/`expect` and `panic!`, and the test gate
//! runs clippy with `-D warnings`. Each remaining site carries an `allow`
//! with the reason it cannot fail. "No IO" is checked the same way:
//! `proto/clippy.toml` refuses files, sockets and processes.
#![cfg_attr(
    not(test),
    warn(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod envelope;
pub mod format;
pub mod model;
pub mod range;
pub mod xdr;
pub mod xml;

pub use model::{MetricMeta, MetricType, Slope};
pub use xdr::{
    DecodeError, EncodeError, Message, MetadataMsg, MetricId, Value, ValueMsg, decode, encode,
};
