use std::fmt;

use figment::value::Value;

/// One mistake in a pipeline, located as precisely as it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value came from: a file path, an environment variable, or
    /// `--set ...`.
    pub source: String,
    /// The dotted key, e.g. `train.lr`; `None` for whole-file problems.
    pub key: Option<String>,
    /// What is wrong, with the offending value and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: `{key}`: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Every problem found in a pipeline; nothing runs while there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid pipeline ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<Problem> for ConfigErrors {
    fn from(problem: Problem) -> Self {
        ConfigErrors {
            problems: vec![problem],
        }
    }
}

/// A short rendering of a figment value for messages.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("\"{s}\""),
        Value::Dict(..) => "a table".to_string(),
        Value::Array(..) => "an array".to_string(),
        other => match other.to_actual() {
            figment::error::Actual::Str(s) => s,
            actual => actual.to_string(),
        },
    }
}
