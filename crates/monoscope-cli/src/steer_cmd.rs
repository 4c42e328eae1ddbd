//! `monoscope features <run-or-sae> --text ...`, `monoscope steer <run-or-sae> ...` and
//! `monoscope attribute <run-or-sae> --prompt ... --target ...`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::compute_args::ComputeArgs;
use anyhow::{Context, bail};
use monoscope_artifacts::Run;
use monoscope_artifacts::label;
use monoscope_artifacts::steer::SteerOutputs;
use monoscope_artifacts::train::{self, TrainOutputs};
use monoscope_lm::MatmulKind;
use monoscope_steer::{ExperimentConfig, FeatureRef, FeatureTable, Mode, SteerConfig, Steerer};

/// Where the SAE, its labels and the model come from.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// A run directory (the SAE of its train or import-sae stage is used) or an SAE directory.
    pub run: PathBuf,
    /// The train or import-sae stage's id, when the run has several.
    #[arg(long)]
    pub stage: Option<String>,
    /// The model: a GGUF file, a Hugging Face directory or a known name.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// Hook to read and steer (default: the SAE's own).
    #[arg(long)]
    pub hook: Option<String>,
    /// An autointerp-label stage directory (default: the run's label stage, if it has one).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Arithmetic of the model's linear layers: `f32` (the reference) or `int8`.
    #[arg(long, default_value = "f32")]
    pub matmul: MatmulKind,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The text to run through the model.
    #[arg(
        long,
        required_unless_present = "contrast",
        conflicts_with = "contrast"
    )]
    pub text: Option<String>,
    /// Two files of texts, one per line: list the features that fire more on the first set
    /// than on the second, with the difference of their mean peaks and its standard error.
    #[arg(long, num_args = 2, value_names = ["POSITIVE", "NEGATIVE"])]
    pub contrast: Vec<PathBuf>,
    /// How many features to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SteerArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// A feature: an id, `label:<words>` or `text:<text>`. Repeat to edit several together.
    #[arg(long = "feature", required = true)]
    pub features: Vec<String>,
    /// Clamp to these strengths: `10x` is ten times the feature's maximum activation, a bare
    /// number is a raw value. Comma-separated for a sweep.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["add", "ablate"])]
    pub clamp: Vec<String>,
    /// Add the feature's direction times these strengths (same forms as --clamp).
    #[arg(long, value_delimiter = ',', conflicts_with = "ablate")]
    pub add: Vec<String>,
    /// Clamp the features to 0.
    #[arg(long)]
    pub ablate: bool,
    /// A prompt. Repeatable.
    #[arg(long = "prompt", required = true)]
    pub prompts: Vec<String>,
    /// Continue the prompt as plain text instead of a chat user message.
    #[arg(long)]
    pub no_chat: bool,
    /// A word whose probability after each prompt is measured. Repeatable.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// 0 is greedy; otherwise sampling from --seed, the same with and without the edit.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text for the KL measurement (default: a neutral paragraph).
    #[arg(long)]
    pub neutral_text: Option<String>,
    /// Also edit the first position (the attention sink).
    #[arg(long)]
    pub steer_first_position: bool,
    /// Also write report.json and report.md into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The text before the target (plain text after BOS unless --chat).
    #[arg(long)]
    pub prompt: String,
    /// The continuation whose log-probability is explained, e.g. " Paris" (mind the space).
    #[arg(long)]
    pub target: String,
    /// Put the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// How many (feature, position) entries to list, strongest attribution first.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// How many of them to ablate for real (one forward pass each).
    #[arg(long, default_value_t = 10)]
    pub ablate: usize,
    /// Print the attribution as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write attributions.json into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The SAE directory and the labels of a run-or-SAE argument.
fn locate(source: &SourceArgs) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let path = &source.run;
    let (sae_dir, run) = if Run::is_run_dir(path) {
        let run = Run::open(path)?;
        let stage = run.require(train::KINDS, source.stage.as_deref(), "an SAE")?;
        (TrainOutputs::new(stage.dir).sae_dir(), Some(run))
    } else {
        // An SAE directory; when it is a stage's `sae/`, its run may hold labels.
        let run_dir = TrainOutputs::around_sae(path)
            .and_then(|outputs| outputs.dir.parent().map(PathBuf::from))
            .filter(|dir| Run::is_run_dir(dir));
        (
            path.clone(),
            run_dir.map(|dir| Run::open(&dir)).transpose()?,
        )
    };
    let labels = match (&source.labels, run) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(run)) => run
            .find(&[label::KIND], None, "labels")?
            .map(|stage| stage.dir),
        (None, None) => None,
    };
    Ok((sae_dir, labels))
}

fn load_model(source: &SourceArgs) -> anyhow::Result<monoscope_lm::Model> {
    let path = monoscope_fetch::resolve_model(&source.model)?;
    source.compute.load(&path, source.matmul)
}

pub fn features(args: FeaturesArgs) -> anyhow::Result<ExitCode> {
    // Bad text files are reported before the model is loaded.
    let contrast_texts = match args.contrast.as_slice() {
        [positive, negative] => Some((read_texts(positive)?, read_texts(negative)?)),
        _ => None,
    };
    let (sae_dir, labels) = locate(&args.source)?;
    let sae = monoscope_sae::load_sae(&sae_dir)?;
    let table = FeatureTable::load(&sae_dir, sae.d_sae, labels.as_deref())?;
    let model = load_model(&args.source)?;
    let steerer = Steerer::new(&model, sae, args.source.hook.as_deref(), table)?;
    let text = match (&args.text, contrast_texts) {
        (_, Some(texts)) => {
            let files = (&args.contrast[0], &args.contrast[1]);
            return contrast(&steerer, &sae_dir, files, texts, args.top, args.json);
        }
        (Some(text), None) => text,
        (None, None) => bail!("give --text or --contrast"),
    };
    let hits = steerer.top_features(text, args.top)?;
    if args.json {
        for hit in &hits {
            println!("{}", serde_json::to_string(hit)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} on {:?} at {}", sae_dir.display(), text, steerer.hook());
    println!(
        "{:>7}  {:>10}  {:>8}  {:>9}  {:<16} label",
        "feature", "activation", "× max", "frequency", "peak token"
    );
    for hit in &hits {
        let ratio = hit
            .max_activation
            .filter(|m| *m > 0.0)
            .map_or("—".into(), |m| format!("{:.2}", hit.activation / m));
        let freq = hit.frequency.map_or("—".into(), |f| format!("{f:.4}"));
        println!(
            "{:>7}  {:>10.3}  {:>8}  {:>9}  {:<16} {}",
            hit.feature,
            hit.activation,
            ratio,
            freq,
            format!("{:?}@{}", hit.token, hit.position),
            hit.label.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn attribute(args: AttributeArgs) -> anyhow::Result<ExitCode> {
    if args.source.matmul == MatmulKind::Int8 {
        bail!(
            "--matmul int8: attribution needs a gradient, which the int8 kernels do not give; use f32"
        );
    }
    let (sae_dir, labels) = locate(&args.source)?;
    let sae = monoscope_sae::load_sae(&sae_dir)?;
    let table = FeatureTable::load(&sae_dir, sae.d_sae, labels.as_deref())?;
    let model = load_model(&args.source)?;
    let steerer = Steerer::new(&model, sae, args.source.hook.as_deref(), table)?;
    let options = monoscope_steer::AttributionOptions {
        top: args.top,
        ablate: args.ablate.min(args.top),
        ..Default::default()
    };
    let result = steerer.attribute(&args.prompt, &args.target, args.chat, options)?;
    if let Some(out) = &args.out {
        let outputs = SteerOutputs::new(out.clone());
        outputs.write_attributions(std::slice::from_ref(&result))?;
        eprintln!("wrote {}", outputs.attributions_path().display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", monoscope_steer::attribute::to_table(&result));
    Ok(ExitCode::SUCCESS)
}

/// `10x` → (multiple, 10.0); `3.5` → (raw, 3.5).
fn parse_strength(s: &str) -> anyhow::Result<(bool, f32)> {
    let t = s.trim();
    let (multiple, number) = match t.strip_suffix(['x', 'X', '×']) {
        Some(n) => (true, n),
        None => (false, t),
    };
    let value: f32 = number
        .trim()
        .parse()
        .with_context(|| format!("strength {s:?}: expected a number, or a multiple like `10x`"))?;
    Ok((multiple, value))
}

pub fn steer(args: SteerArgs) -> anyhow::Result<ExitCode> {
    let (mode, strengths) = match (args.ablate, args.clamp.is_empty(), args.add.is_empty()) {
        (true, _, _) => (Mode::Ablate, vec![]),
        (false, false, _) => (Mode::Clamp, args.clamp.clone()),
        (false, true, false) => (Mode::Add, args.add.clone()),
        (false, true, true) => bail!("say how to steer: --clamp 10x, --add 5x or --ablate"),
    };
    let parsed = strengths
        .iter()
        .map(|s| parse_strength(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (multiples, values) = match parsed.iter().map(|p| p.0).collect::<Vec<_>>().as_slice() {
        [] => (None, None),
        kinds if kinds.iter().all(|&m| m) => (Some(parsed.iter().map(|p| p.1).collect()), None),
        kinds if kinds.iter().all(|&m| !m) => (None, Some(parsed.iter().map(|p| p.1).collect())),
        _ => bail!("mix of multiples (`10x`) and raw values in {strengths:?}: use one kind"),
    };
    let features = args
        .features
        .iter()
        .map(|f| FeatureRef::Query(f.clone()))
        .collect();
    let mut config: SteerConfig = serde_json::from_value(serde_json::json!({
        "experiments": [{"features": []}],
    }))?;
    config.model = args.source.model.clone();
    config.hook = args.source.hook.clone();
    config.experiments = vec![ExperimentConfig {
        feature: None,
        features,
        mode,
        multiples,
        values,
        targets: args.targets.clone(),
    }];
    config.prompts = args.prompts.clone();
    config.chat = !args.no_chat;
    if let Some(text) = &args.neutral_text {
        config.neutral_text = text.clone();
    }
    config.max_new_tokens = args.max_new_tokens;
    config.temperature = args.temperature;
    config.top_p = args.top_p;
    config.seed = Some(args.seed);
    config.matmul = args.source.matmul;
    config.steer_first_position = args.steer_first_position;

    let (sae_dir, labels) = locate(&args.source)?;
    let model = load_model(&args.source)?;
    let mut tick = |what: &str| {
        eprintln!("… {what}");
        Ok(())
    };
    let report = monoscope_steer::run_steering(
        &model,
        &sae_dir,
        labels.as_deref(),
        &config,
        args.seed,
        &mut tick,
    )?;
    println!("{}", report.to_markdown());
    if let Some(out) = &args.out {
        let outputs = SteerOutputs::new(out.clone());
        outputs.write_report(&report)?;
        eprintln!("wrote {}", outputs.report_path().display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The texts of a contrast file, at least two (one per line).
fn read_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the texts", path.display()))?;
    let texts = monoscope_steer::contrast::read_texts(&text);
    if texts.len() < 2 {
        bail!(
            "{}: {} text(s); a contrast needs at least 2 per side (one per line) for a standard error",
            path.display(),
            texts.len()
        );
    }
    Ok(texts)
}

/// `monoscope features --contrast POSITIVE NEGATIVE`.
fn contrast(
    steerer: &Steerer<'_>,
    sae_dir: &Path,
    (positive, negative): (&PathBuf, &PathBuf),
    (pos, neg): (Vec<String>, Vec<String>),
    top: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let hits = steerer.contrast(&pos, &neg, top)?;
    if json {
        for hit in &hits {
            println!("{}", serde_json::to_string(hit)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} at {}: {} texts of {} against {} of {}",
        sae_dir.display(),
        steerer.hook(),
        pos.len(),
        positive.display(),
        neg.len(),
        negative.display()
    );
    println!(
        "{:>7}  {:>19}  {:>8}  {:>8}  {:>13}  label",
        "feature", "difference ± 1.96 SE", "pos mean", "neg mean", "fires pos/neg"
    );
    for hit in &hits {
        println!(
            "{:>7}  {:>8.3} ± {:<8.3}  {:>8.3}  {:>8.3}  {:>6.2}/{:<6.2}  {}{}",
            hit.feature,
            hit.difference,
            1.96 * hit.standard_error,
            hit.positive_mean,
            hit.negative_mean,
            hit.positive_firing,
            hit.negative_firing,
            hit.label.as_deref().unwrap_or(""),
            if hit.scaled {
                ""
            } else {
                " (raw peaks: no reliable training maximum)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
