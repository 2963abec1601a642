//! Bytes from the network or a script, made safe for one log line.

use std::fmt;

/// Bytes for a log line: CR, LF, tab and other control characters escaped
/// (`\r`, `\n`, `\t`, `\xNN`), invalid UTF-8 as `\xNN`, a backslash
/// doubled, and cut after `max` bytes with `...`. Whatever the bytes, the
/// text is one line and cannot pass for another log line.
///
/// The work is done when it is formatted: as a field of a log macro
/// (`data = %Excerpt::new(bytes, 80)`), it costs nothing when the level is
/// off.
#[derive(Debug, Clone, Copy)]
pub struct Excerpt<'a> {
    bytes: &'a [u8],
    max: usize,
}

impl<'a> Excerpt<'a> {
    /// At most `max` bytes of `bytes`.
    pub fn new(bytes: &'a [u8], max: usize) -> Self {
        Excerpt { bytes, max }
    }
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = &self.bytes[..self.bytes.len().min(self.max)];
        for chunk in part.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\r' => f.write_str("\\r")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\\' => f.write_str("\\\\")?,
                    c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c => write!(f, "{c}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.bytes.len() > self.max {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_line_breaks_and_control_bytes_and_cuts() {
        let s = Excerpt::new(b"a\r\nb\x00\xff\\\"c\x1b[2J", 100).to_string();
        assert_eq!(s, "a\\r\\nb\\x00\\xff\\\\\"c\\x1b[2J");
        assert!(!s.contains('\n') && !s.contains('\r'));
        assert_eq!(Excerpt::new(b"abcdef", 3).to_string(), "abc...");
        assert_eq!(Excerpt::new(b"abc", 3).to_string(), "abc");
        assert_eq!(Excerpt::new("é".as_bytes(), 10).to_string(), "é");
        // A cut inside a UTF-8 sequence shows the bytes, not a panic.
        assert_eq!(Excerpt::new("é".as_bytes(), 1).to_string(), "\\xc3...");
    }
}
