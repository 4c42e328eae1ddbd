//! Prompts in delphi's style (`<<token>>` marks where the feature fires) and the parsing of
//! the answers. Kept short: the default explainer is a 135M-parameter model on a CPU.

use monoscope_formats::ChatMessage;

use crate::LabelError;
use crate::format::{Context, FeatureEvidence};

/// A context as it is shown: its tokens and which of them are marked.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub tokens: Vec<String>,
    pub marked: Vec<bool>,
}

impl Shown {
    /// The context with the tokens where the feature fires marked.
    pub fn firing(context: &Context) -> Self {
        Shown {
            tokens: context.tokens.clone(),
            marked: context.activations.iter().map(|&a| a > 0.0).collect(),
        }
    }

    /// The context with nothing marked.
    pub fn plain(context: &Context) -> Self {
        Shown {
            tokens: context.tokens.clone(),
            marked: vec![false; context.tokens.len()],
        }
    }

    /// Text with each run of marked tokens inside `<<` `>>`; a token's leading spaces stay
    /// outside the marks, and newlines become spaces so that one example is one line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut open = false;
        for (token, &marked) in self.tokens.iter().zip(&self.marked) {
            let token = token.replace(['\n', '\r'], " ");
            if marked && !open {
                let body = token.trim_start();
                out.push_str(&token[..token.len() - body.len()]);
                out.push_str("<<");
                out.push_str(body);
                open = true;
            } else if !marked && open {
                out.push_str(">>");
                out.push_str(&token);
                open = false;
            } else {
                out.push_str(&token);
            }
        }
        if open {
            out.push_str(">>");
        }
        out.trim().to_string()
    }
}

const EXPLAIN_SYSTEM: &str = "You name features of a language model from examples. In each \
example the feature fires on the tokens marked <<like this>>. Reply with a short label and one \
sentence saying what the marked tokens have in common.";

/// One worked example, which keeps small models to the answer format better than a
/// description of it.
const SHOT_QUESTION: &str = "Examples:\n1. She was born in <<Paris>>, France\n2. the city of \
<<Lyon>> is known for\n3. moved to <<Marseille>> in 1990";
const SHOT_ANSWER: &str = "Label: French cities\nExplanation: Names of cities in France.";

/// The explainer's prompt: the top contexts, marked, and the promoted tokens.
pub fn explain_messages(evidence: &FeatureEvidence, examples: usize) -> Vec<ChatMessage> {
    let mut user = String::from("Examples:\n");
    for (i, context) in evidence.top.iter().take(examples).enumerate() {
        user += &format!("{}. {}\n", i + 1, Shown::firing(context).text());
    }
    let promoted: Vec<String> = evidence
        .logits
        .promoted
        .iter()
        .take(5)
        .map(|t| format!("\"{}\"", t.token.trim()))
        .collect();
    if !promoted.is_empty() {
        user += &format!("Next tokens it makes likely: {}\n", promoted.join(", "));
    }
    vec![
        ChatMessage::new("system", EXPLAIN_SYSTEM),
        ChatMessage::new("user", SHOT_QUESTION),
        ChatMessage::new("assistant", SHOT_ANSWER),
        ChatMessage::new("user", user.trim_end()),
    ]
}

/// A label and its one-sentence explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub label: String,
    pub explanation: String,
    /// The statistical labeller's tokens (what its own judge matches); empty for model labels.
    pub keywords: Vec<String>,
}

/// Reads `Label:` and `Explanation:` lines; without them, the first line is the label and the
/// rest the explanation. Fails on an empty answer.
pub fn parse_explanation(answer: &str) -> Result<Explanation, LabelError> {
    let clean = |s: &str| {
        s.trim_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '"' | '`' | '<' | '>'))
            .to_string()
    };
    let mut label = None;
    let mut explanation = None;
    let mut rest = Vec::new();
    for line in answer.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(value) = field_value(line, "label:") {
            label.get_or_insert_with(|| clean(value));
        } else if let Some(value) = field_value(line, "explanation:") {
            explanation.get_or_insert_with(|| clean(value));
        } else {
            rest.push(clean(line));
        }
    }
    let mut rest = rest.into_iter().filter(|l| !l.is_empty());
    let label = label.filter(|l| !l.is_empty()).or_else(|| rest.next());
    let Some(label) = label else {
        return Err(LabelError::Answer(format!("empty answer {answer:?}")));
    };
    let explanation = explanation
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| rest.collect::<Vec<_>>().join(" "));
    Ok(Explanation {
        label: truncate_chars(&label, 80),
        explanation: truncate_chars(&explanation, 400),
        keywords: Vec::new(),
    })
}

/// What follows `key` (ASCII, lower case) when the line starts with it in any case, after
/// markdown marks and up to three more characters (a list number such as "1. ").
///
/// Matching is on the line itself, never on a lowercased copy: lowercasing changes byte
/// lengths ("İ", the Kelvin sign), so offsets into a copy do not fall on the line's characters.
fn field_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.trim_start_matches(['*', '#', ' ']);
    start
        .char_indices()
        .take(4)
        .map(|(i, _)| &start[i..])
        .find(|rest| {
            rest.get(..key.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(key))
        })
        .map(|rest| &rest[key.len()..])
}

fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Which question a judge answers about one shown context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeTask {
    /// Does the feature fire anywhere in this (unmarked) text?
    Detection,
    /// Are the marked tokens the ones where the feature fires?
    Fuzzing,
}

const JUDGE_SYSTEM: &str = "Answer yes or no.";

/// One yes/no question about one context. `explanation` may be left out to keep the prompt
/// short for a small local judge. The context comes last, so that every question about one
/// label shares all the tokens before it (a local judge runs that prefix once).
pub fn judge_messages(
    task: JudgeTask,
    label: &str,
    explanation: Option<&str>,
    shown: &Shown,
) -> Vec<ChatMessage> {
    let feature = match explanation.filter(|e| !e.is_empty()) {
        Some(e) => format!("{label}. {e}"),
        None => label.to_string(),
    };
    let question = match task {
        JudgeTask::Detection => "Does the feature fire on the text below?",
        JudgeTask::Fuzzing => {
            "Does the feature fire on the tokens marked <<like this>> in the text below?"
        }
    };
    let question = format!("Feature: {feature}\n{question}\nText: {}", shown.text());
    vec![
        ChatMessage::new("system", JUDGE_SYSTEM),
        ChatMessage::new("user", question),
    ]
}

/// `yes` / `no` at the start of an answer, in any case and with punctuation around it.
pub fn parse_yes_no(answer: &str) -> Option<bool> {
    let word: String = answer
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    match word.as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_runs_and_keeps_spaces_outside() {
        let shown = Shown {
            tokens: vec![
                "The".into(),
                " Golden".into(),
                " Gate".into(),
                " Bridge".into(),
            ],
            marked: vec![false, true, true, false],
        };
        assert_eq!(shown.text(), "The <<Golden Gate>> Bridge");
        let end = Shown {
            tokens: vec!["a".into(), " b".into()],
            marked: vec![false, true],
        };
        assert_eq!(end.text(), "a <<b>>");
    }

    #[test]
    fn parses_labelled_and_bare_answers() {
        let p = parse_explanation("Label: Cities in France\nExplanation: Names of French cities.")
            .unwrap();
        assert_eq!(p.label, "Cities in France");
        assert_eq!(p.explanation, "Names of French cities.");
        let p = parse_explanation("**Label:** \"years\"\nmore text").unwrap();
        assert_eq!(
            (p.label.as_str(), p.explanation.as_str()),
            ("years", "more text")
        );
        let p = parse_explanation("  dates and years \n they mark time").unwrap();
        assert_eq!(p.label, "dates and years");
        assert!(parse_explanation(" \n ").is_err());
        assert!(parse_explanation("Label:\nExplanation:").is_err());
    }

    /// Regression: the label was found in a lowercased copy of the line and sliced out of the
    /// line at the copy's offsets, which panicked or cut the wrong text when lowercasing
    /// changed a character's byte length.
    #[test]
    fn answers_whose_lowercase_has_other_byte_lengths_parse_on_characters() {
        let p = parse_explanation("Label: İzmir\nExplanation: A city.").unwrap();
        assert_eq!(p.label, "İzmir");
        let p = parse_explanation("LABEL: \u{212A}elvin scale\nexplanation: temperatures").unwrap();
        assert_eq!(p.label, "\u{212A}elvin scale");
        assert_eq!(p.explanation, "temperatures");
        let p = parse_explanation("İİİLabel: x").unwrap();
        assert_eq!(p.label, "x");
        let p = parse_explanation("1. label: numbered").unwrap();
        assert_eq!(p.label, "numbered");
        let p = parse_explanation("\u{212A}\u{212A}\u{212A}\u{212A}\u{212A} label: far").unwrap();
        assert_eq!(
            p.label,
            "\u{212A}\u{212A}\u{212A}\u{212A}\u{212A} label: far"
        );
    }

    #[test]
    fn yes_and_no() {
        assert_eq!(parse_yes_no(" Yes."), Some(true));
        assert_eq!(parse_yes_no("**no**, because"), Some(false));
        assert_eq!(parse_yes_no("maybe"), None);
        assert_eq!(parse_yes_no(""), None);
    }
}
