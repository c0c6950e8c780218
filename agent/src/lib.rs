//! Ganglion agent: collects gmond's Linux metric set from /proc and pushes it as
//! Ganglia 3.1+ XDR over unicast UDP, scheduled exactly like gmond's collection
//! groups. The `send` subcommand ([`gmetric`]) replaces `gmetric`.
//!
//! Module map: [`metrics`] (the metric table), [`collect`] (collectors),
//! [`config`] (TOML), [`custom`] (scripts and gmond Python modules), [`send`] (message building, sockets), [`schedule`]
//! (collection groups), [`gmetric`] (the gmetric twin), [`import`] (gmond.conf → TOML), [`keys`] (keygen, key files,
//! sealing datagrams in the authenticated envelope).

pub mod collect;
pub mod config;
pub mod custom;
pub mod gmetric;
pub mod import;
pub mod keys;
pub mod metrics;
pub mod schedule;
pub mod send;

pub use schedule::run;
