//! `monoscope split` and `monoscope coverage` on a run made by `monoscope run`: a tiny model,
//! capture, train with a sweep, then the split and coverage stages.

use std::process::Command;

fn monoscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_monoscope"))
        .args(args)
        .env("MONOSCOPE_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn split_and_coverage_commands_read_a_runs_stages() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "Note {i}: hello the river {} flows past hill {}.",
                i % 7,
                i % 5
            )
        })
        .collect();
    std::fs::write(&corpus, text.join("\n\n")).unwrap();
    let concepts = dir.path().join("concepts.tsv");
    std::fs::write(&concepts, "hello\tgreeting\nriver\tplace\nzebra\tanimal\n").unwrap();
    let run = dir.path().join("run");
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[pipeline]\nname = \"t\"\nrun_dir = {run:?}\n\
             [capture]\nkind = \"capture\"\nmodel = {model:?}\ncorpus = {corpus:?}\nsplit = \"paragraph\"\n\
             hooks = [\"blocks.1.hook_resid_post\"]\ncontext_length = 32\nrows_per_shard = 512\ndtype = \"f32\"\n\
             [train]\nkind = \"train\"\ninputs = {{ store = \"capture.store\" }}\nd_sae = 64\nk = 4\nbatch_size = 64\nepochs = 2\n\
             sweep = [{{ name = \"small\", d_sae = 32 }}]\n\
             [split]\nkind = \"split\"\ninputs = {{ sae = \"train.sae\", store = \"capture.store\" }}\nmodel = {model:?}\n\
             [coverage]\nkind = \"coverage\"\ninputs = {{ sae = \"train.sae\", store = \"capture.store\" }}\nmodel = {model:?}\n\
             concepts = {concepts:?}\nmin_occurrences = 1\n",
            run = run.display().to_string(),
            model = model.display().to_string(),
            corpus = corpus.display().to_string(),
            concepts = concepts.display().to_string(),
        ),
    )
    .unwrap();
    stdout_of(&monoscope(&["run", pipeline.to_str().unwrap()]));
    let run = run.to_str().unwrap();

    let summary = stdout_of(&monoscope(&["split", run]));
    assert!(summary.contains("family of 2 SAEs"), "{summary}");
    assert!(
        summary.contains("small") && summary.contains("(main)"),
        "{summary}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&monoscope(&["split", run, "--json"]))).unwrap();
    assert_eq!(json["levels"].as_array().unwrap().len(), 1);
    let linked = json["levels"][0]["children_with_a_parent"]
        .as_u64()
        .unwrap();
    assert!(linked > 0, "{json}");

    // A feature of the smallest SAE that has children shows them, one line each.
    let split_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/split/split.json")).unwrap())
            .unwrap();
    let parent = split_file["levels"][0]["parent"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p.as_u64())
        .unwrap();
    let tree = stdout_of(&monoscope(&[
        "split",
        run,
        "--feature",
        &parent.to_string(),
    ]));
    assert!(tree.starts_with(&format!("small#{parent} ")), "{tree}");
    assert!(
        tree.lines().skip(1).all(|l| l.starts_with("  main#")),
        "{tree}"
    );
    assert!(tree.lines().count() >= 2, "{tree}");

    let bad = monoscope(&["split", run, "--feature", "0", "--member", "nope"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no member `nope`"));

    let table = stdout_of(&monoscope(&["coverage", run]));
    assert!(table.contains("3 concepts, 2 occurring"), "{table}");
    assert!(
        table.contains("greeting") && table.contains("place"),
        "{table}"
    );
    assert!(!table.contains("animal"), "zebra never occurs: {table}");
}
