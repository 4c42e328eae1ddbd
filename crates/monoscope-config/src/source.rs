//! Reading a pipeline file: existence, text, syntax.
//!
//! figment would report most of these too, but without line and column, so the file is
//! checked here first.

use std::path::Path;

use crate::problems::Problem;

/// The file's text, parsed once to catch syntax errors; figment parses it again for provenance.
pub(crate) fn read(path: &Path) -> Result<(String, toml::Table), Problem> {
    let file = path.display().to_string();
    let problem = |message: String| Problem {
        source: file.clone(),
        key: None,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| problem(format!("cannot read the file: {e}")))?;
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(problem(format!(
            "not a text file (a NUL byte at offset {offset}); expected a TOML pipeline"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        problem(format!(
            "not UTF-8 text (invalid byte at offset {}); expected a TOML pipeline",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|span| line_col(&text, span.start));
        let message = e.message().trim().replace('\n', "; ");
        match (at, duplicate_table(&message)) {
            (Some((line, _)), Some(id)) => problem(format!(
                "line {line}: duplicate stage id `{id}`: each stage table must have its own name"
            )),
            (Some((line, col)), None) => problem(format!(
                "TOML syntax error at line {line}, column {col}: {message}"
            )),
            (None, _) => problem(format!("TOML syntax error: {message}")),
        }
    })?;
    if table.is_empty() {
        return Err(problem(
            "the file is empty: a pipeline needs a [pipeline] table and at least one stage table"
                .to_string(),
        ));
    }
    Ok((text, table))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The table name of a "duplicate key" error at the top level, if that is what `message` says.
fn duplicate_table(message: &str) -> Option<&str> {
    let rest = &message[message.find("duplicate key `")? + "duplicate key `".len()..];
    let (name, tail) = rest.split_once('`')?;
    tail.contains("document root").then_some(name)
}
