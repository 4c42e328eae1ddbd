//! Contrastive search through a model: the ranking is the one the pure statistics give on the
//! per-text peaks the steerer reads, and a set contrasted with itself shows no contrast.

mod common;

use monoscope_sae::Architecture;
use monoscope_steer::{FeatureTable, Steerer};

fn texts(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn contrast_ranks_the_steerer_s_own_peaks_and_finds_nothing_between_equal_sets() {
    let model = common::tiny_model();
    let sae = common::random_sae(model.d_model(), 48, Architecture::TopK { k: 6 }, 4);
    let steerer = Steerer::new(&model, sae, None, FeatureTable::default()).unwrap();
    let positive = texts(&[
        "the river runs north",
        "a river of stone",
        "rivers meet the sea",
    ]);
    let negative = texts(&["seven glass fields", "the light of noon", "fields of glass"]);

    let hits = steerer.contrast(&positive, &negative, usize::MAX).unwrap();
    let peaks =
        |t: &[String]| -> Vec<_> { t.iter().map(|t| steerer.text_peaks(t).unwrap()).collect() };
    let expected =
        monoscope_steer::contrast::contrast(&peaks(&positive), &peaks(&negative), |_| None);
    assert!(!hits.is_empty());
    assert_eq!(hits, expected);
    assert!(
        hits.windows(2)
            .all(|w| w[0].lower_bound >= w[1].lower_bound)
    );

    let same = steerer.contrast(&positive, &positive, usize::MAX).unwrap();
    assert!(
        same.iter()
            .all(|h| h.difference == 0.0 && h.lower_bound <= 0.0)
    );
    assert_eq!(steerer.contrast(&positive, &negative, 2).unwrap().len(), 2);
}
