//! capture → train with a sweep → split and coverage, through the executor on a tiny
//! random-weight GGUF model.

use std::path::Path;

use monoscope_analyses as _;
use monoscope_artifacts::coverage::CoverageOutputs;
use monoscope_artifacts::split::SplitOutputs;
use monoscope_capture as _;
use monoscope_config::{load_with_env, parse_override};
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ProgressMode, RunOptions};
use monoscope_fetch as _;
use monoscope_train as _;

const SWEEP: &str =
    r#"train.sweep=[{ name = "wide", d_sae = 128 }, { name = "small", d_sae = 32 }]"#;

/// Writes the tiny model, the corpus, a concept list and the pipeline; returns the pipeline.
fn pipeline(dir: &Path, set: &[&str]) -> monoscope_config::Pipeline {
    let model = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let corpus = dir.join("corpus.txt");
    let text: Vec<String> = (0..200)
        .map(|i| match i % 3 {
            0 => format!("Note {i}: hello the river {} flows.", i % 7),
            1 => format!("In {i} the hill {} stood.", i % 5),
            _ => format!("hello hello {i}"),
        })
        .collect();
    std::fs::write(&corpus, text.join("\n\n")).unwrap();
    let concepts = dir.join("concepts.tsv");
    std::fs::write(
        &concepts,
        "# test list\nhello\tgreeting\nthe\tword\nriver\tplace\nzebra\tanimal\n",
    )
    .unwrap();
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"t\"\nrun_dir = {run:?}\n\
             [capture]\nkind = \"capture\"\nmodel = {model:?}\ncorpus = {corpus:?}\nsplit = \"paragraph\"\n\
             hooks = [\"blocks.1.hook_resid_post\"]\ncontext_length = 32\nrows_per_shard = 512\ndtype = \"f32\"\n\
             [train]\nkind = \"train\"\ninputs = {{ store = \"capture.store\" }}\nd_sae = 64\nk = 4\nbatch_size = 64\nepochs = 2\nmetrics_every = 10\n\
             [split]\nkind = \"split\"\ninputs = {{ sae = \"train.sae\", store = \"capture.store\" }}\nmodel = {model:?}\n\
             [coverage]\nkind = \"coverage\"\ninputs = {{ sae = \"train.sae\", store = \"capture.store\" }}\nmodel = {model:?}\n\
             concepts = {concepts:?}\nmin_occurrences = 1\n",
            run = dir.join("run").display().to_string(),
            model = model.display().to_string(),
            corpus = corpus.display().to_string(),
            concepts = concepts.display().to_string(),
        ),
    )
    .unwrap();
    let overrides: Vec<_> = set.iter().map(|s| parse_override(s).unwrap()).collect();
    load_with_env(&path, &overrides, &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"))
}

fn quiet() -> RunOptions {
    RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    }
}

#[test]
fn split_and_coverage_run_over_a_sweep_family() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline(dir.path(), &[SWEEP]), &quiet()).unwrap();
    let run = dir.path().join("run");

    let split = SplitOutputs::new(run.join("split"))
        .split()
        .unwrap()
        .unwrap();
    let sizes: Vec<usize> = split.members.iter().map(|m| m.d_sae).collect();
    assert_eq!(sizes, vec![32, 64, 128]);
    let names: Vec<&str> = split.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["small", "main", "wide"]);
    assert!(split.members[1].main && !split.members[0].main);
    let store = monoscope_store::Store::open(&run.join("capture/store")).unwrap();
    // The store is smaller than max_tokens: every row is scanned.
    assert_eq!(split.tokens, store.row_count());
    assert_eq!(split.levels.len(), 2);
    let tokenizer =
        monoscope_analyses::tokens::load_tokenizer(&dir.path().join("tiny.gguf")).unwrap();
    let vocabulary: Vec<String> = (0..tokenizer.vocab_size() as u32)
        .map(|id| tokenizer.token_str(id))
        .collect();
    for (i, level) in split.levels.iter().enumerate() {
        assert_eq!((level.parent_member, level.child_member), (i, i + 1));
        let child = &split.members[i + 1];
        assert_eq!(level.parent.len(), child.d_sae);
        assert_eq!(level.cosine.len(), child.d_sae);
        assert!(
            level.parent.iter().any(Option::is_some),
            "level {i} linked nothing"
        );
        for (c, parent) in level.parent.iter().enumerate() {
            // A feature's family is its parent's family.
            let expected = match (child.firings[c], parent) {
                (0, _) | (_, None) => None,
                (_, Some(p)) => split.members[i].family[*p as usize],
            };
            assert_eq!(child.family[c], expected, "level {i}, child {c}");
            assert!(level.coactivation[c] <= 1.0 && level.cosine[c] <= 1.0 + 1e-5);
        }
    }
    for member in &split.members {
        for (f, tokens) in member.top_tokens.iter().enumerate() {
            assert!(tokens.len() <= 5);
            assert_eq!(tokens.is_empty(), member.firings[f] == 0);
            assert!(tokens.iter().all(|t| vocabulary.contains(t)), "{tokens:?}");
        }
    }

    let coverage = CoverageOutputs::new(run.join("coverage"));
    let file = coverage.coverage().unwrap().unwrap();
    assert_eq!(file.members.len(), 3);
    assert_eq!(file.tokens, store.row_count());
    // Independently of token matching: decode each run of consecutive rows of one document and
    // count the word in the text ("hello" at a paragraph start and " hello" inside are spelled
    // by different tokens).
    let rows = store.rows_of(0..store.row_count(), &[]).unwrap();
    let mut expected = 0;
    let mut run_start = 0;
    for r in 1..=rows.rows() {
        let continues = r < rows.rows()
            && rows.doc_ids[r] == rows.doc_ids[r - 1]
            && rows.positions[r] == rows.positions[r - 1] + 1;
        if !continues {
            let text = tokenizer.decode(&rows.token_ids[run_start..r]);
            expected += text.matches("hello").count() as u64;
            run_start = r;
        }
    }
    let found = file.concepts.iter().find(|c| c.term == "hello").unwrap();
    assert!(expected > 0);
    assert_eq!(found.occurrences, expected);
    let per_million = expected as f64 * 1e6 / store.row_count() as f64;
    assert!((found.frequency_per_million - per_million).abs() < 1e-6);
    assert_eq!(found.best.len(), 3);
    for m in &found.best {
        assert!(m.feature.is_some() && m.recall > 0.0 && m.recall <= 1.0);
    }
    let zebra = file.concepts.iter().find(|c| c.term == "zebra").unwrap();
    assert_eq!(zebra.occurrences, 0);
    assert!(zebra.best.iter().all(|m| m.feature.is_none() && !m.covered));
    let binned: usize = file.bins.iter().map(|b| b.concepts).sum();
    assert_eq!(binned, 3, "hello, the and river occur; zebra does not");
    let svg = std::fs::read_to_string(coverage.svg_path()).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 3);
    let png = std::fs::read(coverage.png_path()).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn a_train_stage_without_a_sweep_is_refused_with_its_directory_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = monoscope_exec::run(&mut pipeline(dir.path(), &[]), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("add a `sweep`"), "{err}");
    assert!(
        err.contains(&dir.path().join("run/train").display().to_string()),
        "{err}"
    );
}
