//! `monoscope labels show <run> --feature N`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use monoscope_artifacts::label::{
    self, Context, FeatureEvidence, LabelOutputs, LabelRecord, Scores,
};
use monoscope_artifacts::locate_stage;

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// A feature's label, scores and top contexts with the firing tokens highlighted.
    Show {
        /// A run directory, or an autointerp-label stage directory.
        run: PathBuf,
        #[arg(long)]
        feature: u32,
        /// The autointerp-label stage's id, when the run has several.
        #[arg(long)]
        stage: Option<String>,
        /// Top contexts to print.
        #[arg(long, default_value_t = 5)]
        contexts: usize,
    },
}

pub fn run(command: LabelsCommand) -> anyhow::Result<ExitCode> {
    let LabelsCommand::Show {
        run,
        feature,
        stage,
        contexts,
    } = command;
    let dir = locate_stage(&run, &[label::KIND], stage.as_deref(), "labels")?;
    let outputs = LabelOutputs::new(dir);
    let evidence = outputs.evidence_of(feature)?.with_context(|| {
        format!(
            "{}: no feature {feature} (the file has fewer lines)",
            outputs.evidence_path().display()
        )
    })?;
    let label = if outputs.has_labels() {
        outputs.labels()?.into_iter().find(|r| r.feature == feature)
    } else {
        None
    };
    let style = Style {
        ansi: std::io::stdout().is_terminal(),
    };
    print!("{}", render(&evidence, label.as_ref(), contexts, style));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
struct Style {
    ansi: bool,
}

impl Style {
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    /// A firing token: background shade by activation relative to the feature's maximum.
    fn firing(self, token: &str, strength: f32) -> String {
        if !self.ansi {
            return format!("[[{token}]]");
        }
        let shade = match strength {
            s if s > 0.66 => "48;5;160",
            s if s > 0.33 => "48;5;166",
            _ => "48;5;172",
        };
        self.wrap(&format!("{shade};97"), token)
    }
    fn wrap(self, code: &str, s: &str) -> String {
        match self.ansi {
            true => format!("\x1b[{code}m{s}\x1b[0m"),
            false => s.to_string(),
        }
    }
}

fn scores_text(s: &Scores) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    format!("detection {}, fuzzing {}", f(s.detection), f(s.fuzzing))
}

fn context_text(c: &Context, max: f32, style: Style) -> String {
    let mut out = String::new();
    for (token, &a) in c.tokens.iter().zip(&c.activations) {
        let token = token.replace('\n', "↵");
        if a > 0.0 {
            out += &style.firing(&token, a / max.max(f32::MIN_POSITIVE));
        } else {
            out += &token;
        }
    }
    out
}

fn render(
    e: &FeatureEvidence,
    label: Option<&LabelRecord>,
    contexts: usize,
    style: Style,
) -> String {
    let mut out = format!("{}\n", style.bold(&format!("feature {}", e.feature)));
    match label {
        Some(l) => {
            out += &format!("  label:       {}\n", style.bold(&l.label));
            if !l.explanation.is_empty() {
                out += &format!("  explanation: {}\n", l.explanation);
            }
            out += &format!(
                "  scores:      {}  ({})\n",
                scores_text(&l.scores),
                l.explainer
            );
            if let Some(b) = &l.baseline {
                out += &format!("  baseline:    {}  ({})\n", b.label, scores_text(&b.scores));
            }
        }
        None if e.is_dead() => out += "  dead: it never fired on the scanned tokens\n",
        None => out += "  (not labelled)\n",
    }
    out += &format!(
        "  fires on {} tokens ({:.4}%), max {:.3}, mean {:.3}\n",
        e.fires,
        100.0 * e.frequency,
        e.max_activation,
        e.mean_activation
    );
    let tokens = |list: &[label::LogitToken]| {
        list.iter()
            .take(6)
            .map(|t| format!("{:?} {:+.2}", t.token, t.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !e.logits.promoted.is_empty() {
        out += &format!("  promotes:    {}\n", tokens(&e.logits.promoted));
        out += &format!("  suppresses:  {}\n", tokens(&e.logits.suppressed));
    }
    if !e.top.is_empty() {
        out += &format!("{}\n", style.bold("top contexts"));
    }
    for c in e.top.iter().take(contexts) {
        let value = c.activations[c.focus as usize];
        out += &format!(
            "  {} {}\n",
            style.dim(&format!("{value:>7.3}")),
            context_text(c, e.max_activation, style)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence() -> FeatureEvidence {
        serde_json::from_value(serde_json::json!({
            "feature": 3, "fires": 2, "frequency": 0.5, "max_activation": 2.0,
            "mean_activation": 1.5, "histogram": {"edges": [0.0, 2.0], "counts": [2]},
            "top": [{"row": 1, "doc": 0, "position": 1, "tokens": ["The", " Golden", " Gate"],
                     "activations": [0.0, 2.0, 1.0], "focus": 1}],
            "quantiles": [], "random": [],
            "logits": {"promoted": [{"token": " Bridge", "value": 3.0}], "suppressed": []}
        }))
        .unwrap()
    }

    #[test]
    fn plain_output_marks_firing_tokens_without_escape_codes() {
        let label = LabelRecord {
            feature: 3,
            label: "Golden Gate".into(),
            explanation: "The bridge.".into(),
            explainer: "statistical".into(),
            scores: Scores {
                detection: Some(0.75),
                fuzzing: None,
            },
            baseline: None,
        };
        let text = render(&evidence(), Some(&label), 5, Style { ansi: false });
        assert!(text.contains("The[[ Golden]][[ Gate]]"), "{text}");
        assert!(text.contains("detection 0.75, fuzzing -"), "{text}");
        assert!(!text.contains('\x1b'));
        let coloured = render(&evidence(), None, 5, Style { ansi: true });
        assert!(
            coloured.contains("\x1b[48;5;160;97m Golden\x1b[0m"),
            "{coloured}"
        );
        assert!(coloured.contains("(not labelled)"));
    }
}
