//! Evidence extraction on stores whose answers are known: planted contexts, and a brute-force
//! recomputation on random data.

mod common;

use common::{Lcg, documents, identity, identity_sae, write_store};
use monoscope_label::evidence::{EvidenceOptions, Quiet, collect_evidence};

fn options(seed: u64) -> EvidenceOptions {
    EvidenceOptions {
        hook: common::HOOK.into(),
        top_n: 3,
        window: 4,
        quantiles: 4,
        quantile_examples: 2,
        random_examples: 5,
        histogram_bins: 8,
        seed,
    }
}

fn token_text(id: u32) -> String {
    format!(" t{id}")
}

#[test]
fn planted_top_contexts_are_found_in_order_and_cut_at_documents() {
    let dir = tempfile::tempdir().unwrap();
    let d = 4;
    // Feature 0 fires only where planted; feature 1 fires everywhere weakly; feature 2 never.
    let planted = [(37u64, 5.0f32), (12, 9.0), (80, 7.0), (81, 1.0), (99, 3.0)];
    let rows = documents(&[40, 41, 19], d, |r| {
        let f0 = planted.iter().find(|p| p.0 == r).map_or(-1.0, |p| p.1);
        vec![f0, 0.5, -1.0, 0.0]
    });
    let store = write_store(&dir.path().join("store"), &rows, 16, identity());
    let sae = identity_sae(d, 3, vec![0.0; 3]);
    let evidence = collect_evidence(&sae, &store, &options(1), &token_text, &Quiet).unwrap();
    assert_eq!(evidence.len(), 3);

    let f0 = &evidence[0];
    assert_eq!(f0.fires, 5);
    assert_eq!(f0.max_activation, 9.0);
    assert!((f0.mean_activation - 5.0).abs() < 1e-6);
    assert!((f0.frequency - 5.0 / 100.0).abs() < 1e-12);
    // Rows 80 and 81 share a window: only the higher one is a top context.
    let top_rows: Vec<u64> = f0.top.iter().map(|c| c.row).collect();
    assert_eq!(top_rows, [12, 80, 37]);
    let at = |c: &monoscope_label::format::Context| c.activations[c.focus as usize];
    assert_eq!(f0.top.iter().map(at).collect::<Vec<_>>(), [9.0, 7.0, 5.0]);
    // Row 37 is position 38 of document 0 (40 tokens): its window stops at the document's end.
    let c37 = &f0.top[2];
    assert_eq!((c37.doc, c37.position), (0, 38));
    assert_eq!(c37.tokens.len(), 4 + 1 + 2);
    assert_eq!(c37.focus, 4);
    assert_eq!(c37.tokens[4], token_text(rows[37].token));
    // Row 80 opens document 2? No: documents hold rows 0..40, 40..81, 81..100. Row 81 starts
    // document 2, so row 80's window ends at 80 and does not show row 81's activation.
    let c80 = &f0.top[1];
    assert_eq!((c80.doc, c80.position, c80.focus), (1, 41, 4));
    assert_eq!(c80.tokens.len(), 5);
    assert_eq!(c80.activations, [0.0, 0.0, 0.0, 0.0, 7.0]);
    // Random contexts never show the feature firing.
    assert!(!f0.random.is_empty());
    assert!(
        f0.random
            .iter()
            .all(|c| c.activations.iter().all(|&a| a == 0.0))
    );
    assert_eq!(f0.histogram.counts.iter().sum::<u64>(), 5);

    let f1 = &evidence[1];
    assert_eq!(f1.fires, 100);
    assert!(
        f1.random.is_empty(),
        "a feature that fires everywhere has no silent context"
    );
    let f2 = &evidence[2];
    assert!(f2.is_dead());
    assert!(f2.top.is_empty() && f2.quantiles.is_empty() && f2.random.is_empty());
    assert!(f2.histogram.edges.is_empty());
}

#[test]
fn matches_brute_force_on_random_data() {
    let dir = tempfile::tempdir().unwrap();
    let (d, d_sae) = (6, 5);
    let mut rng = Lcg(7);
    // Sparse-ish positive activations: each feature fires on roughly a sixth of the rows.
    let rows = documents(&[33, 70, 5, 64, 28], d, |_| {
        (0..d).map(|_| rng.normal() - 1.0).collect()
    });
    let store = write_store(&dir.path().join("store"), &rows, 23, identity());
    let bias = vec![0.0; d_sae];
    let sae = identity_sae(d, d_sae, bias);
    let opts = options(3);
    let evidence = collect_evidence(&sae, &store, &opts, &token_text, &Quiet).unwrap();
    let act = |r: usize, f: usize| rows[r].x[f].max(0.0);
    for (f, e) in evidence.iter().enumerate() {
        let values: Vec<f32> = (0..rows.len())
            .map(|r| act(r, f))
            .filter(|&v| v > 0.0)
            .collect();
        assert_eq!(e.fires, values.len() as u64, "feature {f}");
        let max = values.iter().copied().fold(0.0f32, f32::max);
        assert_eq!(e.max_activation, max);
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        assert!((e.mean_activation as f64 - mean).abs() < 1e-5);
        // Histogram: same bins computed directly.
        let bins = opts.histogram_bins;
        let mut counts = vec![0u64; bins];
        for &v in &values {
            counts[((v / max * bins as f32) as usize).min(bins - 1)] += 1;
        }
        assert_eq!(e.histogram.counts, counts, "feature {f}");
        // The first top context is the global maximum.
        // (Context activations are rounded to four significant digits for display.)
        assert!((e.top[0].activations[e.top[0].focus as usize] - max).abs() <= 1e-3 * max);
        // Top contexts are in descending order and no two windows overlap.
        for w in e.top.windows(2) {
            assert!(w[0].activations[w[0].focus as usize] >= w[1].activations[w[1].focus as usize]);
        }
        let all: Vec<&monoscope_label::format::Context> = e
            .top
            .iter()
            .chain(e.quantiles.iter().flat_map(|q| &q.examples))
            .collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    a.row.abs_diff(b.row) > opts.window as u64,
                    "feature {f}: rows {} and {}",
                    a.row,
                    b.row
                );
            }
        }
        // The top contexts are the greedy choice: each is the highest row not overlapping
        // the ones before it.
        let mut sorted: Vec<(f32, usize)> = (0..rows.len())
            .map(|r| (act(r, f), r))
            .filter(|p| p.0 > 0.0)
            .collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut greedy: Vec<u64> = Vec::new();
        for (_, r) in &sorted {
            if greedy.len() < opts.top_n
                && greedy
                    .iter()
                    .all(|g| g.abs_diff(*r as u64) > opts.window as u64)
            {
                greedy.push(*r as u64);
            }
        }
        assert_eq!(
            e.top.iter().map(|c| c.row).collect::<Vec<_>>(),
            greedy,
            "feature {f}"
        );
        // Every context matches the store: tokens, documents, positions and activations.
        for c in all.iter().copied().chain(e.random.iter()) {
            let start = c.row as usize - c.focus as usize;
            assert_eq!(c.position, rows[c.row as usize].position);
            assert_eq!(c.doc, rows[c.row as usize].doc);
            for (k, (t, &a)) in c.tokens.iter().zip(&c.activations).enumerate() {
                let r = start + k;
                assert_eq!(rows[r].doc, c.doc, "feature {f} row {r}");
                assert_eq!(*t, token_text(rows[r].token));
                assert!(
                    (a - act(r, f)).abs() <= 1e-3 * act(r, f).max(1e-3),
                    "feature {f} row {r}"
                );
            }
            // The window is as wide as the document allows.
            let doc_rows: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].doc == c.doc).collect();
            let expect_lo = (c.row as usize)
                .saturating_sub(opts.window)
                .max(doc_rows[0]);
            assert_eq!(start, expect_lo);
        }
        // Quantile samples lie in their bounds, which cover 0..max in order.
        assert_eq!(e.quantiles.len(), opts.quantiles);
        assert_eq!(e.quantiles.last().unwrap().high, max);
        for q in &e.quantiles {
            assert!(q.low <= q.high);
            for c in &q.examples {
                let v = act(c.row as usize, f);
                assert!(
                    v >= q.low && v <= q.high,
                    "feature {f}: {v} outside [{}, {}]",
                    q.low,
                    q.high
                );
            }
        }
        for c in &e.random {
            assert!(c.activations.iter().all(|&a| a == 0.0));
        }
        assert!(e.random.len() <= opts.random_examples);
    }
    // The same seed gives the same evidence.
    let again = collect_evidence(&sae, &store, &opts, &token_text, &Quiet).unwrap();
    assert_eq!(again, evidence);
}

#[test]
fn refuses_a_store_of_another_width_and_a_non_finite_activation() {
    let dir = tempfile::tempdir().unwrap();
    let rows = documents(&[10], 4, |r| {
        vec![if r == 6 { f32::NAN } else { 1.0 }, 0.0, 0.0, 0.0]
    });
    let store = write_store(&dir.path().join("store"), &rows, 4, identity());
    let wide = identity_sae(5, 2, vec![0.0; 2]);
    let err = collect_evidence(&wide, &store, &options(0), &token_text, &Quiet).unwrap_err();
    assert!(err.to_string().contains("d_in = 5"), "{err}");
    let sae = identity_sae(4, 2, vec![0.0; 2]);
    let err = collect_evidence(&sae, &store, &options(0), &token_text, &Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("row 6") && msg.contains("NaN"), "{msg}");
}
