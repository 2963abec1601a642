//! A small Lua tokenizer for `evapi check`: names, string literals (their
//! value), numbers and symbols, each with its line. Comments are skipped,
//! long brackets (`[[...]]`, `[==[...]==]`, `--[[...]]`) included, so a
//! `KSR.x.y(` inside a comment or a string is never taken for a call. It
//! does not check syntax: Lua does that when the script is loaded.

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A name or a keyword.
    Name(String),
    /// A string literal's value (common escapes decoded).
    Str(String),
    /// A number (its value is not needed).
    Num,
    /// Punctuation: `.`, `(`, `==`, `...`
    Sym(String),
}

/// A token and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
}

const SYMBOLS: [&str; 11] = [
    "...", "..", "==", "~=", "<=", ">=", "::", "//", "<<", ">>", "->",
];

/// The tokens of `src`, in order.
pub(crate) fn tokens(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    if b.starts_with(b"#") {
        // A shebang line, which Lua skips too.
        while i < b.len() && b[i] != b'\n' {
            i += 1;
        }
    }
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += 2;
                if let Some(level) = long_open(b, i) {
                    let (end, lines, _) = long_body(b, i + level + 2, level);
                    line += lines;
                    i = end;
                } else {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            b'[' if long_open(b, i).is_some() => {
                let level = long_open(b, i).unwrap_or(0);
                let start = line;
                let (end, lines, body) = long_body(b, i + level + 2, level);
                // Lua drops a newline right after the opening bracket.
                let body = body.strip_prefix('\n').unwrap_or(&body).to_string();
                out.push(Token {
                    tok: Tok::Str(body),
                    line: start,
                });
                line += lines;
                i = end;
            }
            b'"' | b'\'' => {
                let start = line;
                let (end, lines, value) = quoted(b, i);
                out.push(Token {
                    tok: Tok::Str(value),
                    line: start,
                });
                line += lines;
                i = end;
            }
            _ if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len() {
                    let d = b[i];
                    let exponent = matches!(d, b'e' | b'E' | b'p' | b'P')
                        && matches!(b.get(i + 1), Some(b'+' | b'-'));
                    if exponent {
                        i += 2;
                    } else if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push(Token {
                    tok: Tok::Num,
                    line,
                });
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Name(src[start..i].to_string()),
                    line,
                });
            }
            _ => {
                let sym = SYMBOLS
                    .iter()
                    .find(|s| b[i..].starts_with(s.as_bytes()))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| {
                        let ch = src[i..].chars().next().unwrap_or('?');
                        ch.to_string()
                    });
                i += sym.len();
                out.push(Token {
                    tok: Tok::Sym(sym),
                    line,
                });
            }
        }
    }
    out
}

/// At `[` followed by `=`* and `[`: the number of `=`.
fn long_open(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let level = b[i + 1..].iter().take_while(|&&c| c == b'=').count();
    (b.get(i + 1 + level) == Some(&b'[')).then_some(level)
}

/// From `start` to the closing `]=*]` of `level`: the index after it, the
/// newlines inside and the text. Unclosed: to the end.
fn long_body(b: &[u8], start: usize, level: usize) -> (usize, usize, String) {
    let mut close = vec![b']'];
    close.extend(std::iter::repeat_n(b'=', level));
    close.push(b']');
    let end = b[start.min(b.len())..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map(|p| start + p);
    let (body_end, after) = match end {
        Some(e) => (e, e + close.len()),
        None => (b.len(), b.len()),
    };
    let body = &b[start.min(body_end)..body_end];
    let lines = body.iter().filter(|&&c| c == b'\n').count();
    (after, lines, String::from_utf8_lossy(body).into_owned())
}

/// A quoted string starting at `i`: the index after it, the newlines in
/// it (escaped ones) and its value.
fn quoted(b: &[u8], i: usize) -> (usize, usize, String) {
    let q = b[i];
    let mut j = i + 1;
    let mut lines = 0;
    let mut value = Vec::new();
    while j < b.len() && b[j] != q {
        match b[j] {
            // An unescaped newline ends an (unfinished) string.
            b'\n' => break,
            b'\\' if j + 1 < b.len() => {
                let e = b[j + 1];
                j += 2;
                match e {
                    b'n' => value.push(b'\n'),
                    b't' => value.push(b'\t'),
                    b'\n' => {
                        lines += 1;
                        value.push(b'\n');
                    }
                    b'z' => {
                        while j < b.len() && b[j].is_ascii_whitespace() {
                            lines += usize::from(b[j] == b'\n');
                            j += 1;
                        }
                    }
                    other => value.push(other),
                }
            }
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    (j + 1, lines, String::from_utf8_lossy(&value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(src: &str) -> Vec<(String, usize)> {
        tokens(src)
            .into_iter()
            .map(|t| {
                let text = match t.tok {
                    Tok::Name(n) => n,
                    Tok::Str(s) => format!("{s:?}"),
                    Tok::Num => "#".into(),
                    Tok::Sym(s) => s,
                };
                (text, t.line)
            })
            .collect()
    }

    #[test]
    fn comments_and_strings_hide_what_is_in_them() {
        let src = "-- KSR.a.b()\n--[==[ KSR.c.d()\n]] still ]==] x = 'KSR.e.f()' .. [[\nKSR.g.h()]]\ny = \"a\\\"b\\\n\" z";
        let got = names(src);
        assert_eq!(
            got,
            [
                ("x".into(), 3),
                ("=".into(), 3),
                ("\"KSR.e.f()\"".into(), 3),
                ("..".into(), 3),
                ("\"KSR.g.h()\"".into(), 3),
                ("y".into(), 5),
                ("=".into(), 5),
                ("\"a\\\"b\\n\"".into(), 5),
                ("z".into(), 6),
            ]
        );
    }

    #[test]
    fn numbers_names_and_symbols() {
        let got = names("#!/usr/bin/lua\nif a.b(1e-3, 0x1F, .5)>=2 then end");
        let text: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            text,
            ["if", "a", ".", "b", "(", "#", ",", "#", ",", "#", ")", ">=", "#", "then", "end"]
        );
        assert!(got.iter().all(|(_, l)| *l == 2));
    }
}
