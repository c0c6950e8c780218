//! Attribute escaping: the output is always well-formed, pure-ASCII XML.
//!
//! Ganglia escapes almost nothing (only string VALs, and wrongly for codes ≥ 100),
//! so a sender using `<`, `&` or `"` in a name breaks every downstream parser.
//! We escape everything: `& < > " '` as entities, tab/LF/CR as character
//! references (so attribute-value normalisation keeps them), every other
//! non-ASCII character as a numeric reference (valid whatever the declared
//! encoding), and characters XML 1.0 forbids even as references (NUL and other
//! C0 controls, U+FFFE, U+FFFF) as `?`.

use std::io::{self, Write};

fn needs_escape(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')
}

/// Writes `s` escaped for use inside a double-quoted attribute value.
pub fn write_escaped<W: Write + ?Sized>(w: &mut W, s: &str) -> io::Result<()> {
    // Fast path: the common plain-ASCII name goes out in one write.
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| needs_escape(b)) else {
        return w.write_all(bytes);
    };
    // `first` is the position of an ASCII byte, so a character boundary.
    let (plain, rest) = s.split_at(first);
    w.write_all(plain.as_bytes())?;
    let mut buf = [0u8; 4];
    for c in rest.chars() {
        match c {
            '&' => w.write_all(b"&amp;")?,
            '<' => w.write_all(b"&lt;")?,
            '>' => w.write_all(b"&gt;")?,
            '"' => w.write_all(b"&quot;")?,
            '\'' => w.write_all(b"&apos;")?,
            '\t' | '\n' | '\r' => write!(w, "&#{};", c as u32)?,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => w.write_all(b"?")?,
            c if c.is_ascii() && c != '\u{7f}' => {
                w.write_all(c.encode_utf8(&mut buf).as_bytes())?
            }
            c => write!(w, "&#{};", c as u32)?,
        }
    }
    Ok(())
}

/// `s` escaped as a new string (for tests and small documents).
pub fn escape(s: &str) -> String {
    let mut v = Vec::with_capacity(s.len());
    // Writing into a Vec cannot fail.
    let _ = write_escaped(&mut v, s);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_everything_dangerous() {
        assert_eq!(escape("plain_name.1"), "plain_name.1");
        assert_eq!(
            escape(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
        assert_eq!(escape("é€"), "&#233;&#8364;");
        assert_eq!(escape("a\tb\nc\rd"), "a&#9;b&#10;c&#13;d");
        assert_eq!(escape("nul\0bel\x07"), "nul?bel?");
        assert_eq!(escape("\u{FFFF}x\u{7f}"), "?x&#127;");
    }
}
