//! rrd-export: dump RRD ranges from any gmetad-layout tree to CSV, JSON or NDJSON.
