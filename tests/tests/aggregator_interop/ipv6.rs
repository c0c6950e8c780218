//! IPv6: receiving, XML ports and trusted hosts over the machine's own
//! IPv6 addresses.

use super::*;

/// This machine's IPv6 addresses from /proc/net/if_inet6: `(address,
/// interface index, scope)`; scope 0x00 is global/unique-local, 0x20 link-local.
fn own_ipv6() -> Vec<(std::net::Ipv6Addr, u32, u8)> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = f.first()?;
            let bytes: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<_>>()?;
            let a = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            let ifindex = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let scope = u8::from_str_radix(f.get(3)?, 16).ok()?;
            (!a.is_loopback()).then_some((a, ifindex, scope))
        })
        .collect()
}

/// Two non-loopback IPv6 addresses of this machine for the `trusted_hosts`
/// check: one to list, one not. This machine's own unique-local/global and
/// link-local addresses when it has both; otherwise, as root, two
/// unique-local addresses added to `lo` for the test (removed on drop).
/// Otherwise the test fails, saying so: `trusted_hosts` over IPv6 for a
/// non-loopback client is what it checks, and passing without checking it
/// would be a lie (run it as root, or on a machine with such addresses).
struct V6Pair {
    trusted: std::net::Ipv6Addr,
    /// Address and scope id.
    untrusted: (std::net::Ipv6Addr, u32),
    added: Vec<String>,
}

impl V6Pair {
    fn get() -> V6Pair {
        let addrs = own_ipv6();
        let global = addrs.iter().find(|a| a.2 == 0x00);
        let link = addrs.iter().find(|a| a.2 == 0x20);
        if let (Some(g), Some(l)) = (global, link) {
            return V6Pair {
                trusted: g.0,
                untrusted: (l.0, l.1),
                added: Vec::new(),
            };
        }
        let tag = std::process::id() & 0xffff;
        let mut pair = V6Pair {
            trusted: format!("fd6e:6a6e:{tag:x}::1").parse().unwrap(),
            untrusted: (format!("fd6e:6a6e:{tag:x}::2").parse().unwrap(), 0),
            added: Vec::new(),
        };
        for a in [pair.trusted, pair.untrusted.0] {
            let cidr = format!("{a}/128");
            let out = Command::new("ip")
                .args(["-6", "addr", "add", &cidr, "dev", "lo", "nodad"])
                .output();
            match out {
                Ok(o) if o.status.success() => pair.added.push(cidr),
                other => panic!(
                    "this machine has no unique-local/global plus link-local IPv6 address, \
                     and adding {cidr} to lo failed ({other:?}): run this test as root \
                     (it adds two addresses for its duration) or where such addresses exist"
                ),
            }
        }
        pair
    }
}

impl Drop for V6Pair {
    fn drop(&mut self) {
        for cidr in &self.added {
            let _ = Command::new("ip")
                .args(["-6", "addr", "del", cidr, "dev", "lo"])
                .status();
        }
    }
}

/// IPv6 end to end: a cluster listening on [::1] fed by the agent daemon and
/// `ganglion-agent send` over IPv6, its gmond port and the dump port answering
/// on IPv6, and `trusted_hosts` deciding for a non-loopback IPv6 client.
#[test]
fn ipv6_receive_xml_and_trusted_hosts() {
    let p6 = free_port_pair();
    let pair = V6Pair::get();
    let trusted = format!(", \"{}/128\"", pair.trusted);
    let agg = Aggregator::start(
        "v4clust",
        &format!(
            "trusted_hosts = [\"localhost\"{trusted}]\n\
             [[cluster]]\nname = \"v6clust\"\nudp_listen = \"[::1]:{p6}\"\n\
             xml_listen = \"[::]:{p6}\"\nreverse_dns = false\n"
        ),
    );
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p6));
    let _agent = start_agent(
        agg.dir.path(),
        "agent6.toml",
        &format!("[[send]]\nhost = \"::1\"\nport = {p6}\n"),
        &[],
    );
    let st = Command::new(workspace_bin("ganglion-agent"))
        .args(["send", "-n", "v6metric", "-v", "3", "-t", "float"])
        .args(["--send-to", &format!("[::1]:{p6}")])
        .status()
        .unwrap();
    assert!(st.success());
    let doc = wait_until("agent metrics over IPv6", Duration::from_secs(20), || {
        let d = read_tcp(v6, None);
        let t = String::from_utf8_lossy(&d).into_owned();
        (t.contains("NAME=\"v6metric\"") && t.contains("NAME=\"cpu_num\"")).then_some(d)
    });
    xmllint_valid(&doc).unwrap();
    let c = &clusters(&parse(&doc))[0];
    assert_eq!(c.name, "v6clust");
    assert_eq!(c.hosts.len(), 1);
    assert_eq!(c.hosts[0].ip, "::1");

    // trusted_hosts over IPv6: the gmond port listens on [::]; a client
    // from a non-loopback address of this machine that is listed gets the
    // XML, one from another that is not listed gets nothing.
    let d = read_tcp(SocketAddr::from((pair.trusted, p6)), None);
    assert!(
        String::from_utf8_lossy(&d).contains("NAME=\"v6metric\""),
        "trusted IPv6 client gets the XML"
    );
    let (l, scope) = pair.untrusted;
    let other = SocketAddr::V6(std::net::SocketAddrV6::new(l, p6, 0, scope));
    assert!(
        read_tcp(other, None).is_empty(),
        "untrusted IPv6 client gets nothing"
    );
    let metrics = http_get(agg.http, "/metrics");
    assert!(
        metrics.contains("ganglion_xml_untrusted_total 1"),
        "{metrics}"
    );
}
