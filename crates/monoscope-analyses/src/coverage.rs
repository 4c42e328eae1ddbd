//! Completeness against frequency: for each concept of a list, how often it occurs in the
//! scanned tokens, and per dictionary size the feature most specific to it.
//!
//! A concept is a term (`France`, `oxygen`); its occurrences are the places where its token
//! sequence (with or without a leading space, as a tokenizer spells a word inside and at the
//! start of a text) appears within one document's consecutive rows, counted at the last token
//! of the match. A feature's recall for the concept is the share of the occurrences it fires
//! on, its precision the share of its own firings that are occurrences; the most specific
//! feature maximises their harmonic mean (F1), and covers the concept when both clear their
//! thresholds ([`MatchOptions::criterion`]).

use std::collections::HashMap;

use monoscope_artifacts::coverage::{ConceptMatch, FrequencyBin};
use monoscope_formats::Tokenizer;

use crate::error::AnalysisError;
use crate::scan::RowIds;

/// The concept list shipped with monoscope: countries, cities, chemical elements, sciences and
/// other common subjects of encyclopaedia articles.
pub const DEFAULT_CONCEPTS: &str = include_str!("../concepts/default.tsv");

/// One line of a concept list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    pub term: String,
    pub category: String,
}

/// Reads a concept list: `term<TAB>category` per line; blank lines and lines starting with
/// `#` are skipped; a term listed twice is kept once. `source` names the list in errors.
pub fn parse_concepts(text: &str, source: &str) -> Result<Vec<Concept>, AnalysisError> {
    let mut concepts: Vec<Concept> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((term, category)) = line.split_once('\t') else {
            return Err(AnalysisError::Invalid(format!(
                "{source}:{}: {line:?}: expected `term<TAB>category`",
                number + 1
            )));
        };
        let (term, category) = (term.trim(), category.trim());
        if term.is_empty() || category.is_empty() || category.contains('\t') {
            return Err(AnalysisError::Invalid(format!(
                "{source}:{}: {line:?}: expected a non-empty term and category separated by one tab",
                number + 1
            )));
        }
        if !concepts.iter().any(|c| c.term == term) {
            concepts.push(Concept {
                term: term.to_string(),
                category: category.to_string(),
            });
        }
    }
    if concepts.is_empty() {
        return Err(AnalysisError::Invalid(format!(
            "{source}: no concepts (expected `term<TAB>category` lines)"
        )));
    }
    Ok(concepts)
}

/// The token sequences of a term: as written and after a space, each once.
pub fn term_sequences(tokenizer: &Tokenizer, term: &str) -> Result<Vec<Vec<u32>>, AnalysisError> {
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    for text in [term.to_string(), format!(" {term}")] {
        let ids = tokenizer.encode(&text, false)?;
        if !ids.is_empty() && !sequences.contains(&ids) {
            sequences.push(ids);
        }
    }
    Ok(sequences)
}

/// For each concept (its token sequences), the rows where one of them ends, in increasing
/// order. A match lies within one document's consecutive rows.
pub fn find_occurrences(sequences: &[Vec<Vec<u32>>], ids: &RowIds) -> Vec<Vec<u32>> {
    // Indexed by last token, so each row looks only at the sequences that could end there.
    let mut by_last: HashMap<u32, Vec<(usize, &[u32])>> = HashMap::new();
    for (concept, seqs) in sequences.iter().enumerate() {
        for seq in seqs {
            if let Some(&last) = seq.last() {
                by_last.entry(last).or_default().push((concept, seq));
            }
        }
    }
    let mut occurrences = vec![Vec::new(); sequences.len()];
    for row in 0..ids.len() {
        let Some(candidates) = by_last.get(&ids.token_ids[row]) else {
            continue;
        };
        for &(concept, seq) in candidates {
            let Some(start) = (row + 1).checked_sub(seq.len()) else {
                continue;
            };
            let matches =
                ids.token_ids[start..=row] == *seq && (start + 1..=row).all(|r| ids.continues(r));
            let list: &mut Vec<u32> = &mut occurrences[concept];
            if matches && list.last() != Some(&(row as u32)) {
                list.push(row as u32);
            }
        }
    }
    occurrences
}

/// The thresholds a feature must clear to cover a concept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchOptions {
    pub min_recall: f64,
    pub min_precision: f64,
}

impl MatchOptions {
    /// When a feature counts as specific to a concept, in words.
    pub fn criterion(&self) -> String {
        format!(
            "per dictionary, the feature with the highest F1 of recall (share of the term's \
             occurrences, at their last token, on which it fires) and precision (share of its \
             firings on the scanned tokens that are such occurrences); the concept is covered \
             when that feature's recall ≥ {} and precision ≥ {}",
            self.min_recall, self.min_precision
        )
    }

    /// The most specific feature for a concept with `occurrences`, given how often each
    /// feature fired on them (`hits`) and in all (`firings`). Ties go to the lower index.
    pub fn best(
        &self,
        occurrences: u64,
        hits: &HashMap<u32, u64>,
        firings: &[u64],
    ) -> ConceptMatch {
        let mut best: Option<(u32, f64, f64, f64)> = None;
        for (&feature, &hit) in hits {
            let recall = hit as f64 / occurrences.max(1) as f64;
            let precision = hit as f64 / firings[feature as usize].max(1) as f64;
            let f1 = 2.0 * recall * precision / (recall + precision);
            let better = match best {
                None => true,
                Some((f, _, _, score)) => f1 > score || (f1 == score && feature < f),
            };
            if better {
                best = Some((feature, recall, precision, f1));
            }
        }
        match best {
            Some((feature, recall, precision, _)) => ConceptMatch {
                feature: Some(feature),
                recall,
                precision,
                covered: recall >= self.min_recall && precision >= self.min_precision,
            },
            None => ConceptMatch {
                feature: None,
                recall: 0.0,
                precision: 0.0,
                covered: false,
            },
        }
    }
}

/// Counts, for one dictionary, each feature's firings and its firings on each concept's
/// occurrences, fed chunk by chunk.
#[derive(Debug, Clone)]
pub struct MemberCounts {
    pub firings: Vec<u64>,
    /// Per concept: feature → firings on the concept's occurrences.
    pub hits: Vec<HashMap<u32, u64>>,
}

impl MemberCounts {
    pub fn new(d_sae: usize, concepts: usize) -> Self {
        MemberCounts {
            firings: vec![0; d_sae],
            hits: vec![HashMap::new(); concepts],
        }
    }

    /// Adds rows `first..` (their codes); `concepts_at` gives the concepts occurring at a row.
    pub fn add(
        &mut self,
        first: usize,
        codes: &monoscope_sae::SparseCodes,
        concepts_at: &HashMap<u32, Vec<usize>>,
    ) {
        for r in 0..codes.n_rows() {
            let features = codes.row(r).0;
            for &f in features {
                self.firings[f as usize] += 1;
            }
            if let Some(concepts) = concepts_at.get(&((first + r) as u32)) {
                for &c in concepts {
                    for &f in features {
                        *self.hits[c].entry(f).or_default() += 1;
                    }
                }
            }
        }
    }
}

/// Row → the concepts occurring there.
pub fn concepts_by_row(occurrences: &[Vec<u32>]) -> HashMap<u32, Vec<usize>> {
    let mut at: HashMap<u32, Vec<usize>> = HashMap::new();
    for (concept, rows) in occurrences.iter().enumerate() {
        for &row in rows {
            at.entry(row).or_default().push(concept);
        }
    }
    at
}

/// Log-spaced bins of concept frequency (`per_decade` per factor of ten, edges at powers of
/// `10^(1/per_decade)`), each with the share of its concepts each member covers. Only
/// concepts with a frequency are binned (`(frequency per million, covered per member)`);
/// empty bins are left out.
pub fn frequency_bins(
    concepts: &[(f64, Vec<bool>)],
    members: usize,
    per_decade: usize,
) -> Vec<FrequencyBin> {
    let per_decade = per_decade.max(1) as f64;
    let bin_of = |f: f64| (f.log10() * per_decade).floor() as i64;
    let mut bins: std::collections::BTreeMap<i64, (usize, Vec<usize>)> = Default::default();
    for (frequency, covered) in concepts.iter().filter(|(f, _)| *f > 0.0) {
        let (count, per_member) = bins
            .entry(bin_of(*frequency))
            .or_insert_with(|| (0, vec![0; members]));
        *count += 1;
        for (n, &c) in per_member.iter_mut().zip(covered) {
            *n += usize::from(c);
        }
    }
    bins.into_iter()
        .map(|(k, (count, per_member))| FrequencyBin {
            low: 10f64.powf(k as f64 / per_decade),
            high: 10f64.powf((k + 1) as f64 / per_decade),
            concepts: count,
            covered_fraction: per_member
                .iter()
                .map(|&n| n as f64 / count as f64)
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoscope_sae::SparseCodes;

    fn ids(tokens: &[u32], docs: &[u32]) -> RowIds {
        let mut positions = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            let continues = i > 0 && docs[i - 1] == *d;
            positions.push(if continues { positions[i - 1] + 1 } else { 0 });
        }
        RowIds {
            token_ids: tokens.to_vec(),
            doc_ids: docs.to_vec(),
            positions,
        }
    }

    fn codes(d_sae: usize, rows: &[&[u32]]) -> SparseCodes {
        let mut c = SparseCodes {
            d_sae,
            row_ptr: vec![0],
            ..Default::default()
        };
        for row in rows {
            for &f in *row {
                c.indices.push(f);
                c.values.push(1.0);
            }
            c.row_ptr.push(c.indices.len());
        }
        c
    }

    proptest::proptest! {
        /// Any text, a list or not, parses or is refused naming the source; every concept
        /// parsed has a term and a category without tabs.
        #[test]
        fn any_text_parses_or_is_refused_by_name(text in "(?s).{0,400}", tabs in "[a-z\t#\n ]{0,80}") {
            for input in [text, tabs] {
                match parse_concepts(&input, "any.tsv") {
                    Ok(list) => {
                        for c in list {
                            proptest::prop_assert!(!c.term.is_empty() && !c.term.contains('\t'));
                            proptest::prop_assert!(!c.category.contains('\t'));
                        }
                    }
                    Err(e) => proptest::prop_assert!(e.to_string().contains("any.tsv")),
                }
            }
        }
    }

    #[test]
    fn concept_lists_parse_with_comments_and_errors_name_the_line() {
        let list = parse_concepts(
            "# header\nFrance\tcountry\n\noxygen\telement\nFrance\tcountry\n",
            "l.tsv",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].term, "oxygen");
        assert_eq!(list[1].category, "element");
        let err = parse_concepts("France\tcountry\nno tab here\n", "l.tsv").unwrap_err();
        assert!(err.to_string().contains("l.tsv:2"), "{err}");
        assert!(parse_concepts("# nothing\n", "e.tsv").is_err());
        let shipped = parse_concepts(DEFAULT_CONCEPTS, "default").unwrap();
        assert!(shipped.len() >= 100, "{}", shipped.len());
    }

    #[test]
    fn occurrences_are_matched_within_a_document_at_their_last_token() {
        // Concept 0 is the sequence [5, 6] (or [7] alone); concept 1 is [9].
        let sequences = vec![vec![vec![5, 6], vec![7]], vec![vec![9]]];
        // Rows:        0  1  2  3  4  5  6  7
        let tokens = [5, 6, 1, 5, 6, 7, 2, 3];
        // A document boundary between rows 3 and 4 breaks the second [5, 6].
        let docs = [0, 0, 0, 0, 1, 1, 1, 1];
        let found = find_occurrences(&sequences, &ids(&tokens, &docs));
        assert_eq!(found, vec![vec![1, 5], vec![]]);
    }

    #[test]
    fn a_feature_firing_exactly_on_a_term_covers_it_and_a_scattered_one_does_not() {
        // Concept 0 ("term" = token 5) occurs at rows 0, 3 and 6; feature 1 fires exactly there.
        // Concept 1 (token 8) occurs at rows 1 and 4; only feature 0 fires there, and it fires
        // on every row.
        let tokens = [5, 8, 2, 5, 8, 2, 5, 2];
        let docs = [0; 8];
        let row_ids = ids(&tokens, &docs);
        let sequences = vec![vec![vec![5]], vec![vec![8]]];
        let occurrences = find_occurrences(&sequences, &row_ids);
        let at = concepts_by_row(&occurrences);
        let mut counts = MemberCounts::new(3, 2);
        let all = codes(3, &[&[0, 1], &[0], &[0], &[0, 1], &[0], &[0]]);
        let rest = codes(3, &[&[0, 1], &[0]]);
        counts.add(0, &all, &at);
        counts.add(6, &rest, &at);
        assert_eq!(counts.firings, vec![8, 3, 0]);
        let options = MatchOptions {
            min_recall: 0.5,
            min_precision: 0.5,
        };
        let term = options.best(3, &counts.hits[0], &counts.firings);
        assert_eq!(term.feature, Some(1));
        assert_eq!((term.recall, term.precision), (1.0, 1.0));
        assert!(term.covered);
        let other = options.best(2, &counts.hits[1], &counts.firings);
        assert_eq!(other.feature, Some(0));
        assert_eq!(other.recall, 1.0);
        assert_eq!(other.precision, 0.25);
        assert!(!other.covered);
        let none = options.best(0, &HashMap::new(), &counts.firings);
        assert_eq!(none.feature, None);
        assert!(!none.covered);
        assert!(options.criterion().contains("recall ≥ 0.5"));
    }

    #[test]
    fn bins_are_log_spaced_and_hold_the_covered_share_per_member() {
        let concepts = vec![
            (12.0, vec![true, true]),
            (15.0, vec![false, true]),
            (150.0, vec![true, true]),
            (0.0, vec![false, false]),
        ];
        let bins = frequency_bins(&concepts, 2, 1);
        assert_eq!(bins.len(), 2);
        assert!((bins[0].low - 10.0).abs() < 1e-9 && (bins[0].high - 100.0).abs() < 1e-9);
        assert_eq!(bins[0].concepts, 2);
        assert_eq!(bins[0].covered_fraction, vec![0.5, 1.0]);
        assert_eq!(bins[1].concepts, 1);
        let half_decades = frequency_bins(&concepts, 2, 2);
        assert!((half_decades[0].high - 10f64.sqrt() * 10.0).abs() < 1e-9);
    }
}
