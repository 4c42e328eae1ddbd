//! The most common label words of a group of features.

use std::collections::{BTreeMap, HashMap};

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
