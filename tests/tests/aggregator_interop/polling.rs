//! Polling in both directions: real gmetad polls us, we poll real gmond and
//! hostile sources, and grids of grids with real gmetad below and above.

use super::*;

#[test]
fn real_gmetad_polls_the_aggregator() {
    let agg = Aggregator::start("aggclust", "");
    let conf = gmetric_conf(agg.dir.path(), agg.udp);
    gmetric(
        &conf,
        &["-n", "temp_c", "-v", "21.5", "-t", "float", "-u", "C"],
    );
    gmetric(
        &conf,
        &["-n", "odd&unit", "-v", "3", "-t", "uint32", "-u", "<u>"],
    );
    wait_for_metric(agg.gmond, "temp_c");

    let dir = tempfile::tempdir().unwrap();
    let gmetad = start_gmetad(
        dir.path(),
        "upper",
        &format!(
            "data_source \"agg\" 15 127.0.0.1:{}\ngridname \"Upper\"\ncase_sensitive_hostnames 0",
            agg.gmond.port()
        ),
    );
    let (dump_addr, rrds) = (gmetad.xml, gmetad.rrds.clone());
    // gmetad parses our whole document (one bad byte would drop the poll).
    let doc = wait_for_metric(dump_addr, "temp_c");
    let text = String::from_utf8_lossy(&doc);
    assert!(text.contains("<CLUSTER NAME=\"aggclust\""), "{text}");
    assert!(
        text.contains("NAME=\"odd&unit\""),
        "gmetad re-emits decoded text: {text}"
    );
    // …and writes the RRD where gmetad always does.
    wait_until("gmetad's temp_c.rrd", Duration::from_secs(10), || {
        rrds.join("aggclust/127.0.0.1/temp_c.rrd")
            .exists()
            .then_some(())
    });
}

#[test]
fn aggregator_polls_real_gmond_and_a_broken_source_costs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let gport = free_port_pair();
    let gconf = gmond_conf(
        dir.path(),
        "gmondclust",
        gport,
        Some(SocketAddr::from(([127, 0, 0, 1], gport))),
    );
    let _gmond = start_gmond(&gconf, gport);

    // A source that answers with garbage, and one that accepts and never writes.
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let bad_addr = bad.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in bad.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"<?xml version=\"1.0\"?><GANGLIA_XML VERSION=\"x\" SOURCE=\"gmond\"><CLUSTER NAME=\"broken\" LOCALTIME=\"1\"><HOST NAME=\"h\" IP=\"1\" REPORTED=\"1\">\x00&&<<");
        }
    });
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let agg = Aggregator::start(
        "local",
        &format!(
            "[[data_source]]\nname = \"gm\"\npoll_secs = 2\naddresses = [\"127.0.0.1:1\", \"127.0.0.1:{gport}\"]\n\
             [[data_source]]\nname = \"bad\"\npoll_secs = 2\naddresses = [\"{bad_addr}\"]\n\
             [[data_source]]\nname = \"silent\"\npoll_secs = 2\ntimeout_secs = 1\naddresses = [\"{silent_addr}\"]\n"
        ),
    );
    let doc = wait_for_metric(agg.dump, "load_one");
    xmllint_valid(&doc).unwrap_or_else(|e| panic!("{e}"));
    let d = parse(&doc);
    let cs = clusters(&d);
    let g = cs
        .iter()
        .find(|c| c.name == "gmondclust")
        .expect("polled gmond cluster (failover past a dead address)");
    let h = &g.hosts[0];
    for m in ["load_one", "cpu_num", "mem_total", "disk_free"] {
        assert!(h.metrics.iter().any(|x| x.name == m), "{m} missing");
    }
    assert!(
        cs.iter().any(|c| c.name == "local"),
        "own cluster still served"
    );
    assert!(
        !cs.iter().any(|c| c.name == "broken" && !c.hosts.is_empty()),
        "broken source contributes no half-read host"
    );
    drop(silent);
}

/// A TCP server on a free loopback port that runs `serve` for every
/// connection, each on its own thread.
fn fake_source(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// A one-cluster, one-host gmond document.
fn gmond_doc(cluster: &str, host: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" standalone=\"yes\"?>\n\
         <GANGLIA_XML VERSION=\"3.7.2\" SOURCE=\"gmond\">\n\
         <CLUSTER NAME=\"{cluster}\" LOCALTIME=\"{now}\" OWNER=\"o\" LATLONG=\"l\" URL=\"u\">\n\
         <HOST NAME=\"{host}\" IP=\"10.1.1.1\" REPORTED=\"{now}\" TN=\"0\" TMAX=\"20\" DMAX=\"0\" \
         LOCATION=\"x\" GMOND_STARTED=\"0\">\n\
         <METRIC NAME=\"polled_m\" VAL=\"1\" TYPE=\"float\" UNITS=\"\" TN=\"0\" TMAX=\"60\" DMAX=\"0\" \
         SLOPE=\"both\" SOURCE=\"gmond\"/>\n</HOST>\n</CLUSTER>\n</GANGLIA_XML>\n"
    )
}

/// What hostile data sources can do, and that it costs nothing else: a gzip
/// bomb is refused at the size limit (counted), a document that never ends
/// is cut at the poll deadline (counted), two sources naming the same
/// cluster do not overwrite each other (the first keeps it), and a source
/// naming our own UDP cluster is refused, its hosts untouched. Our own hosts
/// keep flowing throughout.
#[test]
fn hostile_polled_sources_cost_nothing_else() {
    use std::io::{Read, Write};
    // 600 MiB of zeros gzipped to about 600 KB: more than the 512 MiB a
    // polled document may inflate to.
    let mut gz = Command::new(require_binary("gzip"))
        .args(["-c", "-9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gz.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..600 {
            stdin.write_all(&zeros).unwrap();
        }
    });
    let mut bomb = Vec::new();
    gz.stdout.take().unwrap().read_to_end(&mut bomb).unwrap();
    feeder.join().unwrap();
    assert!(gz.wait().unwrap().success());
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let bomb = std::sync::Arc::new(bomb);
    let bomb_addr = fake_source(move |mut s| {
        let _ = s.write_all(&bomb);
    });
    // A document that never ends: a host every 50 ms, for as long as the
    // poller reads.
    let endless = fake_source(|mut s| {
        let head = gmond_doc("endless", "e0");
        let head = &head[..head.find("<HOST").unwrap()];
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        for i in 0.. {
            let host = format!(
                "<HOST NAME=\"e{i}\" IP=\"10.2.2.2\" REPORTED=\"1\" TN=\"0\" TMAX=\"20\" DMAX=\"0\"/>\n"
            );
            if s.write_all(host.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let serve_doc = |doc: String| {
        move |mut s: std::net::TcpStream| {
            let _ = s.write_all(doc.as_bytes());
        }
    };
    let first = fake_source(serve_doc(gmond_doc("shared", "first")));
    let second = fake_source(serve_doc(gmond_doc("shared", "second")));
    let thief = fake_source(serve_doc(gmond_doc("home", "intruder")));
    let source = |name: &str, poll: u32, addr: SocketAddr| {
        format!(
            "[[data_source]]\nname = \"{name}\"\npoll_secs = {poll}\ntimeout_secs = 1\n\
             addresses = [\"{addr}\"]\n"
        )
    };
    let agg = Aggregator::start(
        "home",
        &[
            source("bomb", 5, bomb_addr),
            source("endless", 1, endless),
            source("first", 1, first),
            source("second", 1, second),
            source("thief", 1, thief),
        ]
        .concat(),
    );
    let conf = gmetric_conf(agg.dir.path(), agg.udp);
    gmetric(&conf, &["-n", "before", "-v", "1", "-t", "float"]);
    wait_until("every hostile source met", Duration::from_secs(60), || {
        let m = |s: &str| metrics_value(agg.http, s);
        (m("ganglion_poll_too_large_total") >= 1
            && m("ganglion_poll_too_slow_total") >= 1
            && m("ganglion_poll_cluster_collisions_total") >= 4)
            .then_some(())
    });
    gmetric(&conf, &["-n", "after", "-v", "2", "-t", "float"]);
    wait_for_metric(agg.gmond, "after");
    let doc = read_tcp(agg.dump, None);
    xmllint_valid(&doc).unwrap_or_else(|e| panic!("{e}"));
    let cs = clusters(&parse(&doc));
    let names = |c: &xml::Cluster| c.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
    let home = cs.iter().find(|c| c.name == "home").expect("own cluster");
    assert_eq!(
        names(home),
        ["127.0.0.1"],
        "the UDP cluster keeps its hosts"
    );
    let host = &home.hosts[0];
    for m in ["before", "after"] {
        assert!(host.metrics.iter().any(|x| x.name == m), "{m} missing");
    }
    let shared: Vec<_> = cs.iter().filter(|c| c.name == "shared").collect();
    assert_eq!(shared.len(), 1);
    let owner = names(shared[0]);
    assert!(owner == ["first"] || owner == ["second"], "{owner:?}");
    assert!(
        !cs.iter().any(|c| c.name == "endless"),
        "nothing of it taken"
    );
    // More polls later, the same source still owns the name.
    let seen = metrics_value(agg.http, "ganglion_poll_cluster_collisions_total");
    wait_until("more refused polls", Duration::from_secs(30), || {
        (metrics_value(agg.http, "ganglion_poll_cluster_collisions_total") >= seen + 4)
            .then_some(())
    });
    let cs = clusters(&parse(&read_tcp(agg.dump, None)));
    let shared = cs.iter().find(|c| c.name == "shared").unwrap();
    assert_eq!(names(shared), owner, "the first owner keeps the name");
    // Each refused name is logged once, however many polls.
    let log = agg.log();
    let refusals = log.matches("refusing a polled name").count();
    assert_eq!(refusals, 2, "{log}");
}

/// A gmetad polling `source` as data source "src" every 5 s, grid `grid`,
/// authority `http://<name>/`.
pub(crate) fn start_gmetad_for(
    dir: &std::path::Path,
    name: &str,
    grid: &str,
    source: SocketAddr,
) -> Gmetad {
    start_gmetad(
        dir,
        name,
        &format!(
            "data_source \"src\" 5 {source}\ngridname \"{grid}\"\nauthority \"http://{name}/\""
        ),
    )
}

#[test]
fn grid_of_grids_real_gmetad_below_and_above() {
    let dir = tempfile::tempdir().unwrap();
    let gport = free_port_pair();
    let gconf = gmond_conf(
        dir.path(),
        "lowclust",
        gport,
        Some(SocketAddr::from(([127, 0, 0, 1], gport))),
    );
    let _gmond = start_gmond(&gconf, gport);
    let lower = start_gmetad_for(
        dir.path(),
        "lower",
        "Lower",
        SocketAddr::from(([127, 0, 0, 1], gport)),
    );
    let lower_xml = lower.xml;
    wait_for_metric(lower_xml, "load_one");

    // The aggregator polls the lower gmetad: it becomes a child grid, summary only.
    let agg = Aggregator::start(
        "middle",
        &format!(
            "[[data_source]]\nname = \"lower\"\npoll_secs = 2\naddresses = [\"{lower_xml}\"]\n"
        ),
    );
    let doc = wait_until("child grid in our dump", Duration::from_secs(20), || {
        let d = read_tcp(agg.dump, None);
        String::from_utf8_lossy(&d)
            .contains("<GRID NAME=\"Lower\"")
            .then_some(d)
    });
    xmllint_valid(&doc).unwrap_or_else(|e| panic!("{e}"));
    let d = parse(&doc);
    let Item::Grid(top) = &d.items[0] else {
        panic!("GRID")
    };
    let lower = top
        .grids
        .iter()
        .find(|g| g.name == "Lower")
        .expect("child grid");
    assert_eq!(lower.authority, "http://lower/");
    assert_eq!(lower.hosts.map(|h| (h.up, h.down)), Some((1, 0)));
    let load = lower
        .metrics
        .iter()
        .find(|m| m.name == "load_one")
        .expect("summary METRICS");
    assert_eq!(load.num, 1);
    assert!(lower.clusters.is_empty(), "a child grid is summary only");
    let s = read_tcp(agg.query, Some(b"/?filter=summary\n"));
    xmllint_valid(&s).unwrap();
    assert!(String::from_utf8_lossy(&s).contains("<GRID NAME=\"Lower\""));

    // A real gmetad above polls our 8651 and sees our grid, without parse errors.
    let upper = start_gmetad_for(dir.path(), "upper", "Upper", agg.dump);
    let upper_xml = upper.xml;
    let up = wait_until(
        "our grid in the upper gmetad",
        Duration::from_secs(30),
        || {
            let d = read_tcp(upper_xml, None);
            let t = String::from_utf8_lossy(&d).into_owned();
            (t.contains("<GRID NAME=\"TestGrid\"") && t.contains("NAME=\"load_one\"")).then_some(t)
        },
    );
    assert!(up.contains("<HOSTS UP=\"1\""), "{up}");
}
