//! The class of hostile names the output tests feed through every writer
//! (Graphite lines, Prometheus text, command-file lines, Nagios objects,
//! handler environments): every byte class a spoofed gmond packet or a
//! polled XML source can put into a host, cluster or metric name.

/// Hostile names: separators of each output format, every ASCII control
/// character, Unicode line and paragraph separators, path tricks, quotes
/// and markup, the empty string, and names longer than any line budget.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "a b",
        " lead",
        "trail ",
        "/",
        "..",
        "../../etc/passwd",
        "a/b",
        "a.b",
        ".",
        "a..b",
        "a\nb",
        "a\r\nb",
        "a\rb",
        "a\tb",
        "a\0b",
        "\0",
        "<script>alert(1)</script>",
        "&amp;\"'",
        "a;b",
        "a|b",
        "a!b",
        "a#b",
        "#a",
        "a=b",
        "'quoted'",
        "back\\slash\\",
        "{a}",
        "$USER1$",
        "a\u{2028}b\u{2029}c\u{85}d",
        "\u{7f}\u{9b}",
        "é\u{fffd}\u{200b}",
        "x\n[1] PROCESS_HOST_CHECK_RESULT;h;2;pwned",
        "m 1 2\nevil.path 666 1",
        "a\\\"b\nc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for b in 0u8..0x20 {
        v.push(format!("c{}c", b as char));
    }
    v.push("l".repeat(5000));
    v.push(format!("{}\n{}", "x".repeat(300), "y".repeat(300)));
    v
}

/// Reads one escaped Prometheus label value from the start of `s` (just
/// after its opening quote); returns it and the rest after the closing
/// quote, `None` when the escaping is not the exposition format's.
pub fn label_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                _ => return None,
            },
            '\n' => return None,
            c => out.push(c),
        }
    }
    None
}
