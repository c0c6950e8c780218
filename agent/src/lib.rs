//! Ganglion agent: collects gmond's Linux metric set from /proc and pushes it as
//! Ganglia 3.1+ XDR over unicast UDP. The `send` subcommand replaces `gmetric`.
