//! Ganglion aggregator: receives Ganglia XDR, keeps cluster state, writes
//! gmetad-layout RRDs and serves gmond/gmetad XML plus a browser dashboard.
