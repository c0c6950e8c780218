//! libconfuse's syntax, as gmond reads its configuration: `name = value`,
//! lists `{ a, b }`, sections `name { … }` and titled sections
//! `name "title" { … }`, comments `#`, `//` and `/* */`, strings in double or
//! single quotes, names case-insensitive, and `include ("glob")`, expanded in
//! place (sorted, as glob(3) returns them). Pure: files come through a
//! [`Source`], so tests feed include trees from memory.

use std::path::{Path, PathBuf};

/// A parsed item.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Opt {
        line: usize,
        name: String,
        values: Vec<String>,
        file: String,
    },
    Sec {
        line: usize,
        name: String,
        title: Option<String>,
        body: Vec<Node>,
        file: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

/// An error that makes the input unusable (the only reason to exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file named on the command line cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Where included files come from.
pub trait Source {
    /// Text of a file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// Files matching a glob, sorted.
    fn glob(&self, pattern: &str) -> Vec<PathBuf>;
}

/// The real file system.
pub struct Fs;

impl Source for Fs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let b = std::fs::read(path)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn glob(&self, pattern: &str) -> Vec<PathBuf> {
        let p = Path::new(pattern);
        let (dir, name) = match (p.parent(), p.file_name().and_then(|n| n.to_str())) {
            (Some(d), Some(n)) => (d, n),
            _ => return Vec::new(),
        };
        if !name.contains(['*', '?', '[']) {
            return if p.exists() {
                vec![p.to_path_buf()]
            } else {
                Vec::new()
            };
        }
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|f| {
                        f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| wildcard(name, n))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// glob(3)'s `*` and `?` within one path component (no leading-dot matches).
pub fn wildcard(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    fn m(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

pub(super) fn tokenize(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let c: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < c.len() {
        let ch = c[i];
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            c0 if c0.is_whitespace() => i += 1,
            '#' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < c.len() && !(c[i] == '*' && c.get(i + 1) == Some(&'/')) {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            '{' | '}' | '=' | '(' | ')' | ',' => {
                out.push((line, Tok::Punct(ch)));
                i += 1;
            }
            '"' | '\'' => {
                let quote = ch;
                let start_line = line;
                let mut s = String::new();
                i += 1;
                while i < c.len() && c[i] != quote {
                    if c[i] == '\\' && quote == '"' && i + 1 < c.len() {
                        i += 1;
                        s.push(match c[i] {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        s.push(c[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push((start_line, Tok::Str(s)));
            }
            _ => {
                let mut s = String::new();
                while i < c.len()
                    && !c[i].is_whitespace()
                    && !matches!(c[i], '{' | '}' | '=' | '(' | ')' | ',' | '"' | '\'' | '#')
                    && (c[i] != '/' || !matches!(c.get(i + 1), Some('/') | Some('*')))
                {
                    s.push(c[i]);
                    i += 1;
                }
                out.push((line, Tok::Word(s)));
            }
        }
    }
    out
}

pub(super) struct Parser<'a> {
    pub(super) toks: Vec<(usize, Tok)>,
    pub(super) pos: usize,
    pub(super) file: String,
    pub(super) src: &'a dyn Source,
    pub(super) depth: usize,
    pub(super) notes: &'a mut Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<(usize, Tok)> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn value(&mut self) -> Option<String> {
        match self.next() {
            Some((_, Tok::Word(w))) | Some((_, Tok::Str(w))) => Some(w),
            _ => None,
        }
    }

    pub(super) fn body(&mut self, until_brace: bool) -> Vec<Node> {
        let mut out = Vec::new();
        while let Some((line, t)) = self.next() {
            let name = match t {
                Tok::Punct('}') if until_brace => return out,
                Tok::Word(w) => w.to_ascii_lowercase(),
                _ => continue, // stray punctuation: libconfuse would refuse; skip it
            };
            match self.peek().cloned() {
                Some(Tok::Punct('=')) => {
                    self.pos += 1;
                    let values = if self.peek() == Some(&Tok::Punct('{')) {
                        self.pos += 1;
                        let mut vs = Vec::new();
                        while let Some((_, t)) = self.next() {
                            match t {
                                Tok::Punct('}') => break,
                                Tok::Word(w) | Tok::Str(w) => vs.push(w),
                                _ => {}
                            }
                        }
                        vs
                    } else {
                        self.value().into_iter().collect()
                    };
                    out.push(Node::Opt {
                        line,
                        name,
                        values,
                        file: self.file.clone(),
                    });
                }
                Some(Tok::Punct('(')) => {
                    self.pos += 1;
                    let mut args = Vec::new();
                    while let Some((_, t)) = self.next() {
                        match t {
                            Tok::Punct(')') => break,
                            Tok::Word(w) | Tok::Str(w) => args.push(w),
                            _ => {}
                        }
                    }
                    if name == "include" {
                        for a in args {
                            out.extend(self.include(&a, line));
                        }
                    } else {
                        self.notes.push(format!(
                            "{}:{line}: function {name}(…) is not a gmond setting: ignored",
                            self.file
                        ));
                    }
                }
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    let body = self.body(true);
                    out.push(Node::Sec {
                        line,
                        name,
                        title: None,
                        body,
                        file: self.file.clone(),
                    });
                }
                Some(Tok::Str(title)) | Some(Tok::Word(title))
                    if self.toks.get(self.pos + 1).map(|(_, t)| t) == Some(&Tok::Punct('{')) =>
                {
                    self.pos += 2;
                    let body = self.body(true);
                    out.push(Node::Sec {
                        line,
                        name,
                        title: Some(title),
                        body,
                        file: self.file.clone(),
                    });
                }
                _ => self.notes.push(format!(
                    "{}:{line}: `{name}` without a value: ignored",
                    self.file
                )),
            }
        }
        out
    }

    fn include(&mut self, pattern: &str, line: usize) -> Vec<Node> {
        if self.depth >= 8 {
            self.notes.push(format!(
                "{}:{line}: include nested more than 8 deep: not followed",
                self.file
            ));
            return Vec::new();
        }
        let files = self.src.glob(pattern);
        if files.is_empty() {
            // glob(3) with no match: gmond includes nothing, silently.
            self.notes.push(format!(
                "{}:{line}: include ('{pattern}') matches no file",
                self.file
            ));
        }
        let mut out = Vec::new();
        for f in files {
            match self.src.read(&f) {
                Ok(text) => {
                    let mut p = Parser {
                        toks: tokenize(&text),
                        pos: 0,
                        file: f.display().to_string(),
                        src: self.src,
                        depth: self.depth + 1,
                        notes: self.notes,
                    };
                    out.extend(p.body(false));
                }
                Err(e) => self.notes.push(format!(
                    "{}:{line}: included file {} cannot be read ({e}): skipped",
                    self.file,
                    f.display()
                )),
            }
        }
        out
    }
}
