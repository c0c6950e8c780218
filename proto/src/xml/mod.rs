//! gmond and gmetad XML (placeholder until the writer and reader land).
