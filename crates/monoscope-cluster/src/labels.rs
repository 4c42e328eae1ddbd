//! Feature labels from the labelling stage (`labels.jsonl`: one JSON object per line with at
//! least `"feature"` and `"label"`), and the most common label words of a group of features.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::ClusterError;

/// Words too common in labels to say anything about a cluster.
const STOP_WORDS: &[&str] = &[
    "the",
    "and",
    "for",
    "with",
    "from",
    "into",
    "onto",
    "that",
    "this",
    "these",
    "those",
    "are",
    "was",
    "were",
    "its",
    "their",
    "his",
    "her",
    "our",
    "your",
    "not",
    "but",
    "about",
    "related",
    "relating",
    "such",
    "other",
    "various",
    "mentions",
    "mention",
    "references",
    "reference",
    "words",
    "word",
    "token",
    "tokens",
    "text",
    "phrase",
    "phrases",
    "term",
    "terms",
    "concept",
    "concepts",
    "context",
    "contexts",
    "feature",
    "features",
    "like",
    "use",
    "used",
    "using",
    "some",
    "any",
    "all",
    "one",
    "two",
    "also",
    "than",
    "then",
    "when",
    "where",
    "which",
    "who",
    "what",
    "how",
    "has",
    "have",
    "had",
    "being",
    "been",
    "more",
    "most",
    "often",
    "especially",
];

/// Reads `labels.jsonl` from a labels directory (or the file itself): feature → label. Later
/// lines for the same feature win. Lines without a string `label` (e.g. not labelled yet) are
/// skipped; a line that is not JSON or lacks `feature` is an error naming the line.
pub fn read_labels(path: &Path) -> Result<BTreeMap<u32, String>, ClusterError> {
    let file = if path.is_dir() {
        path.join("labels.jsonl")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| ClusterError::io(&file, e))?;
    let mut labels = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse_error = |message: String| ClusterError::Parse {
            path: file.clone(),
            line: index + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| parse_error(format!("not JSON: {e}")))?;
        let feature = value
            .get("feature")
            .and_then(|f| f.as_u64())
            .and_then(|f| u32::try_from(f).ok())
            .ok_or_else(|| parse_error("`feature` is missing or not an unsigned integer".into()))?;
        if let Some(label) = value.get("label").and_then(|l| l.as_str()) {
            labels.insert(feature, label.to_string());
        }
    }
    Ok(labels)
}

/// Lower-case words of a label, stop words and words under three letters left out.
fn words(label: &str) -> impl Iterator<Item = String> + '_ {
    label
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
}

/// The `count` words found in the labels of most `members` (each feature counts a word once);
/// ties go to the alphabetically first word. Words found in one label only are left out when
/// the group has more than one labelled member.
pub fn top_words(members: &[u32], labels: &BTreeMap<u32, String>, count: usize) -> Vec<String> {
    let mut frequency: HashMap<String, usize> = HashMap::new();
    let mut labelled = 0;
    for m in members {
        if let Some(label) = labels.get(m) {
            labelled += 1;
            let mut seen: Vec<String> = words(label).collect();
            seen.sort();
            seen.dedup();
            for w in seen {
                *frequency.entry(w).or_default() += 1;
            }
        }
    }
    let min = if labelled > 1 { 2 } else { 1 };
    let mut ranked: Vec<(String, usize)> =
        frequency.into_iter().filter(|(_, n)| *n >= min).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(count).map(|(w, _)| w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_and_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        std::fs::write(
            &path,
            "{\"feature\":3,\"label\":\"Golden Gate Bridge\",\"score\":0.8}\n\n{\"feature\":5}\n",
        )
        .unwrap();
        let labels = read_labels(dir.path()).unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[&3], "Golden Gate Bridge");
        std::fs::write(
            &path,
            "{\"feature\":3,\"label\":\"x\"}\n{\"label\":\"y\"}\n",
        )
        .unwrap();
        let err = read_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains("labels.jsonl: line 2") && err.contains("feature"),
            "{err}"
        );
    }

    #[test]
    fn top_words_count_features_not_repeats() {
        let labels: BTreeMap<u32, String> = [
            (0, "San Francisco landmarks: the bridge"),
            (1, "Bridge, bridge, bridge"),
            (2, "Alcatraz island in San Francisco"),
            (3, "unrelated"),
        ]
        .into_iter()
        .map(|(f, l)| (f, l.to_string()))
        .collect();
        let top = top_words(&[0, 1, 2], &labels, 3);
        assert_eq!(top, ["bridge", "francisco", "san"]);
        assert_eq!(top_words(&[3], &labels, 3), ["unrelated"]);
        assert!(top_words(&[9], &labels, 3).is_empty());
    }
}
