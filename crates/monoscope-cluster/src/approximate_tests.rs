use super::*;
use crate::rng::planted_dictionary;

fn planted(groups: usize, per: usize, dim: usize, spread: f32, seed: u64) -> Directions {
    let (rows, _) = planted_dictionary(groups, per, dim, spread, seed);
    Directions::from_rows(&rows, dim, "planted").unwrap()
}

fn gaussian(rows: usize, dim: usize, seed: u64) -> Directions {
    let mut rng = SplitMix64::new(seed);
    let rows: Vec<f32> = (0..rows * dim).map(|_| rng.gaussian()).collect();
    Directions::from_rows(&rows, dim, "gaussian").unwrap()
}

fn search(
    queries: &Directions,
    keys: &Directions,
    k: usize,
    same_set: bool,
    params: IvfParams,
) -> (Vec<Vec<Neighbour>>, IvfReport) {
    approximate_neighbours(queries, keys, k, same_set, &params, 256, &|_| Ok(())).unwrap()
}

#[test]
fn recall_with_the_defaults_is_high_on_planted_and_random_dictionaries() {
    // Groups of 16 at cosine ~0.5, as in the benchmark; and isotropic noise, where every
    // direction is nearly orthogonal to every other and a partition helps least.
    for (name, d) in [
        ("planted", planted(250, 16, 64, 1.0, 11)),
        ("gaussian", gaussian(3000, 24, 5)),
    ] {
        let params = IvfParams::new(DEFAULT_NPROBE, 1);
        let (lists, report) = search(&d, &d, 10, true, params);
        assert!(lists.iter().all(|l| l.len() == 10), "{name}");
        for (i, l) in lists.iter().enumerate() {
            assert!(
                l.iter().all(|n| n.feature as usize != i),
                "{name}: {i} is its own"
            );
            assert!(l.windows(2).all(|w| w[0].cosine >= w[1].cosine), "{name}");
        }
        let (recall, used) = recall_at_k(&d, &d, &lists, 10, true, 500, 256, 5).unwrap();
        eprintln!("{name}: recall@10 {recall:.4} with {report:?}");
        assert_eq!(used, 500);
        assert!(recall >= 0.9, "{name}: recall@10 {recall}");
        assert!(
            report.nprobe < report.nlist,
            "{name}: the test must not be exhaustive"
        );
    }
}

#[test]
fn probing_every_cell_is_the_exact_search() {
    let mut rows = planted_dictionary(30, 10, 16, 0.8, 3).0;
    for dead in [4usize, 77] {
        rows[dead * 16..(dead + 1) * 16].fill(0.0);
    }
    let d = Directions::from_rows(&rows, 16, "planted").unwrap();
    let other = gaussian(120, 16, 8);
    let params = IvfParams {
        nlist: Some(12),
        ..IvfParams::new(12, 4)
    };
    for (queries, keys, same_set) in [(&d, &d, true), (&d, &other, false), (&other, &d, false)] {
        let exact = exact_neighbours(queries, keys, 7, 64, same_set, &mut |_| Ok(())).unwrap();
        let (got, _) = search(queries, keys, 7, same_set, params);
        for (i, (g, e)) in got.iter().zip(&exact).enumerate() {
            let g_ids: Vec<u32> = g.iter().map(|n| n.feature).collect();
            let e_ids: Vec<u32> = e.iter().map(|n| n.feature).collect();
            assert_eq!(g_ids, e_ids, "query {i}, same_set {same_set}");
            for (a, b) in g.iter().zip(e) {
                assert!((a.cosine - b.cosine).abs() < 1e-5);
            }
        }
    }
    let (got, _) = search(&d, &d, 7, true, params);
    assert!(got[4].is_empty() && got[77].is_empty());
    assert!(
        got.iter()
            .flatten()
            .all(|n| n.feature != 4 && n.feature != 77)
    );
}

#[test]
fn the_same_seed_gives_the_same_answer() {
    let d = planted(100, 12, 32, 1.0, 2);
    let params = IvfParams::new(4, 17);
    let (a, report_a) = search(&d, &d, 10, true, params);
    let (b, report_b) = search(&d, &d, 10, true, params);
    assert_eq!(a, b);
    assert_eq!(report_a.largest_list, report_b.largest_list);
    let (c, _) = search(&d, &d, 10, true, IvfParams::new(4, 18));
    // Another seed, another partition: still a valid answer of the same shape.
    assert_eq!(c.len(), a.len());
    assert!(c.iter().all(|l| l.len() == 10));
}

#[test]
fn bad_settings_are_refused_naming_the_key_and_the_value() {
    let d = planted(10, 10, 8, 0.5, 1);
    let run = |params: IvfParams| {
        approximate_neighbours(&d, &d, 5, true, &params, 64, &|_| Ok(()))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(run(IvfParams::new(0, 0)), "nprobe = 0: expected at least 1");
    let no_cells = IvfParams {
        nlist: Some(0),
        ..IvfParams::new(1, 0)
    };
    assert_eq!(run(no_cells), "nlist = 0: expected at least 1");
    let too_many = IvfParams {
        nlist: Some(4),
        ..IvfParams::new(9, 0)
    };
    assert_eq!(run(too_many), "nprobe = 9: expected at most nlist = 4");
}

#[test]
fn degenerate_inputs_and_cancellation() {
    // More cells asked for than there are keys: clamped, and then exhaustive.
    let d = planted(3, 4, 8, 0.5, 1);
    let params = IvfParams {
        nlist: Some(100),
        ..IvfParams::new(100, 0)
    };
    let (lists, report) = search(&d, &d, 3, true, params);
    assert_eq!((report.nlist, report.nprobe), (12, 12));
    assert!(lists.iter().all(|l| l.len() == 3));
    let dead = Directions::from_rows(&[0.0; 24], 8, "dead").unwrap();
    let (lists, _) = search(&dead, &dead, 3, true, IvfParams::new(2, 0));
    assert!(lists.iter().all(Vec::is_empty));
    let (lists, _) = search(&d, &d, 0, true, IvfParams::new(2, 0));
    assert!(lists.iter().all(Vec::is_empty));
    let stopped = approximate_neighbours(&d, &d, 3, true, &params, 64, &|_| {
        Err(ClusterError::Cancelled)
    });
    assert!(matches!(stopped, Err(ClusterError::Cancelled)));
}

#[test]
fn recall_of_the_exact_answer_is_one_and_of_nonsense_is_low() {
    let d = planted(10, 10, 16, 0.5, 2);
    let exact = exact_neighbours(&d, &d, 5, 32, true, &mut |_| Ok(())).unwrap();
    let (recall, _) = recall_at_k(&d, &d, &exact, 5, true, 1000, 32, 0).unwrap();
    assert!((recall - 1.0).abs() < 1e-12);
    let wrong: Vec<Vec<Neighbour>> = (0..d.len())
        .map(|i| {
            (0..5)
                .map(|j| Neighbour {
                    feature: ((i + 1 + j * 10) % d.len()) as u32,
                    cosine: 0.0,
                })
                .collect()
        })
        .collect();
    let (recall, _) = recall_at_k(&d, &d, &wrong, 5, true, 1000, 32, 0).unwrap();
    assert!(recall < 0.3, "recall {recall}");
}

#[test]
fn the_memory_bound_at_the_benchmark_size() {
    let bytes = approximate_scratch_bytes(262_144, 576, 2048, DEFAULT_NPROBE, 2048, 2);
    // The figure the module docs state.
    assert_eq!(bytes >> 20, 177);
}
