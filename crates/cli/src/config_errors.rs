//! Reading the config file so that one run reports every mistake, each
//! with its line, in words a Kamailio user knows ("must be a whole
//! number", not serde's "expected u64").
//!
//! The file is read in three passes: TOML syntax (one error: nothing after
//! it can be trusted); then each key of each section on its own against
//! the section's type, so every unknown key and wrong type is found; then
//! each section's own `validate`, run again after each failure with the
//! failing key back at its default, so every bad value is found too.

use serde::de::DeserializeOwned;
use toml_edit::ImDocument;

/// One mistake: its line (1-based) when known, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Line in the file.
    pub line: Option<usize>,
    /// `[section] key = value: what is wrong`.
    pub text: String,
}

/// The parsed file with key positions, and the mistakes found so far.
pub struct Reader<'a> {
    text: &'a str,
    doc: ImDocument<&'a str>,
    /// The file as plain values (the same parse, without positions).
    pub table: toml::Table,
    /// Every mistake found.
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    /// Parse `text`; a syntax error is the one problem.
    pub fn new(text: &'a str) -> Result<Reader<'a>, Problem> {
        let doc = ImDocument::parse(text).map_err(|e| Problem {
            line: e.span().map(|s| line_of(text, s.start)),
            text: syntax_words(e.message()),
        })?;
        let table: toml::Table = toml::from_str(text).map_err(|e| Problem {
            line: e.span().map(|s| line_of(text, s.start)),
            text: e.message().to_string(),
        })?;
        Ok(Reader {
            text,
            doc,
            table,
            problems: Vec::new(),
        })
    }

    /// The line of `key` in `section` (`None`: of the section itself).
    pub fn line(&self, section: &str, key: Option<&str>) -> Option<usize> {
        let root = self.doc.as_table();
        let span = match key {
            None => root.key(section)?.span(),
            Some(key) => {
                let t = root.get(section)?.as_table_like()?;
                t.get_key_value(key)?.0.span()
            }
        }?;
        Some(line_of(self.text, span.start))
    }

    fn report(&mut self, section: &str, key: Option<&str>, text: String) {
        let line = self.line(section, key);
        self.problems.push(Problem { line, text });
    }

    /// Read section `name` as `T`: each key alone first (unknown keys,
    /// wrong types), then the good keys together through `validate`
    /// (`Display` of its error: `[section] key = value: reason`).
    pub fn section<T, E>(&mut self, name: &str, validate: impl Fn(&T) -> Result<(), E>) -> T
    where
        T: DeserializeOwned + Default,
        E: std::fmt::Display,
    {
        let Some(value) = self.table.get(name).cloned() else {
            return T::default();
        };
        let toml::Value::Table(keys) = value else {
            let text = format!(
                "{name} = {value}: {name} is a section: write [{name}] on a line of its own, \
                 its keys on the lines below"
            );
            self.report(name, None, text);
            return T::default();
        };
        let mut good = toml::Table::new();
        for (key, value) in keys {
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            match T::deserialize(toml::Value::Table(alone)) {
                Ok(_) => {
                    good.insert(key, value);
                }
                Err(e) => {
                    let text = key_words(name, &key, &value, &e.to_string());
                    self.report(name, Some(&key), text);
                }
            }
        }
        let read = |t: &toml::Table| T::deserialize(toml::Value::Table(t.clone()));
        let mut section = match read(&good) {
            Ok(s) => s,
            Err(e) => {
                self.report(
                    name,
                    None,
                    format!("[{name}]: {}", first_line(&e.to_string())),
                );
                return T::default();
            }
        };
        // Bounded: each round puts one more key back at its default.
        for _ in 0..=good.len() {
            let Err(e) = validate(&section) else { break };
            let text = e.to_string();
            let key = key_of(name, &text).filter(|k| good.contains_key(k.as_str()));
            self.report(name, key.as_deref(), text);
            let Some(key) = key else { break };
            good.remove(&key);
            match read(&good) {
                Ok(s) => section = s,
                Err(_) => break,
            }
        }
        section
    }

    /// Report every top-level name that is not one of `sections`.
    pub fn unknown_sections(&mut self, sections: &[&str]) {
        let unknown: Vec<(String, toml::Value)> = self
            .table
            .iter()
            .filter(|(k, _)| !sections.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let known: Vec<String> = sections.iter().map(|s| format!("[{s}]")).collect();
        for (name, value) in unknown {
            let text = if value.is_table() {
                format!(
                    "[{name}]: unknown section{}; the sections are {}",
                    did_you_mean(&name, sections),
                    known.join(", ")
                )
            } else {
                format!(
                    "{name} = {value}: a key outside any section; keys go below a [section] line"
                )
            };
            self.report(&name, None, text);
        }
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The key of a section's own error, `[section] key = value: reason`.
fn key_of(section: &str, text: &str) -> Option<String> {
    let rest = text.strip_prefix(&format!("[{section}] "))?;
    let key = rest.split([' ', '=', ':']).next()?;
    (!key.is_empty()).then(|| key.to_string())
}

fn syntax_words(message: &str) -> String {
    format!("not valid TOML: {}", message.trim())
}

/// The names in serde's "expected one of `a`, `b`" or "expected `a` or `b`".
fn names_after_expected(msg: &str) -> Vec<String> {
    let Some(list) = msg.split_once("expected ").map(|(_, l)| l) else {
        return Vec::new();
    };
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The closest known name, when it is one or two edits away.
fn did_you_mean(name: &str, known: &[impl AsRef<str>]) -> String {
    known
        .iter()
        .map(|k| (edits(name, k.as_ref()), k.as_ref()))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance, for short names.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// serde's words for what was wanted, in the file's words.
fn wanted_words(want: &str) -> String {
    let want = want.trim();
    let range = |max: u64| format!("a whole number from 0 to {max}");
    match want {
        "u8" => range(u8::MAX.into()),
        "u16" => range(u16::MAX.into()),
        "u32" => range(u32::MAX.into()),
        "u64" | "usize" => "a whole number, 0 or more".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "path string" | "string only" | "a borrowed string" | "a character" => {
            "text in quotes".into()
        }
        "a sequence" => "a list like [\"a\", \"b\"]".into(),
        w if w == "a map" || w.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

/// serde's words for what was found.
fn found_words(found: &str) -> &'static str {
    let kind = found.split([' ', '`']).next().unwrap_or("");
    match kind {
        "string" => "text in quotes",
        "integer" => "a whole number",
        "floating" => "a number with a fraction",
        "boolean" => "true or false",
        "sequence" => "a list",
        "map" => "a table",
        _ => "something else",
    }
}

/// One key's deserialisation error, in the file's words.
fn key_words(section: &str, key: &str, value: &toml::Value, msg: &str) -> String {
    let msg = first_line(msg);
    let head = format!("[{section}] {key} = {value}");
    let each = if value.is_array() { "each entry " } else { "" };
    if msg.starts_with("unknown field") {
        let known = names_after_expected(msg);
        return format!(
            "[{section}] {key}: unknown key{}; the keys of [{section}] are {}",
            did_you_mean(key, &known),
            known.join(", ")
        );
    }
    if msg.starts_with("unknown variant") {
        let allowed: Vec<String> = names_after_expected(msg)
            .iter()
            .map(|v| format!("\"{v}\""))
            .collect();
        return format!("{head}: {each}must be one of {}", allowed.join(", "));
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, want)) = rest.split_once(", expected ") {
            return format!(
                "{head}: {each}must be {}, not {}",
                wanted_words(want),
                found_words(found)
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((_, want)) = rest.split_once(", expected ") {
            return format!("{head}: {each}must be {}", wanted_words(want));
        }
    }
    format!("{head}: {msg}")
}

/// Sort problems by line (unplaced ones last) and write one per line,
/// `origin:line: text`.
pub fn render(origin: &str, mut problems: Vec<Problem>) -> String {
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.text.clone()));
    problems.dedup();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match p.line {
            Some(n) => format!("{origin}:{n}: {}", p.text),
            None => format!("{origin}: {}", p.text),
        })
        .collect();
    if lines.len() == 1 {
        return lines.into_iter().next().unwrap_or_default();
    }
    let mut out = format!("{} mistakes in {origin}:", lines.len());
    for l in lines {
        out.push('\n');
        out.push_str(&l);
    }
    out
}
