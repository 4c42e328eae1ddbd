//! `monoscope model info | run | generate | perplexity`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::compute_args::ComputeArgs;
use anyhow::{Context, bail};
use clap::Subcommand;
use monoscope_lm::{
    ForwardOptions, GenerateOptions, HookName, Interventions, Logits, MatmulKind, Model, TokenBatch,
};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Architecture, sizes, tokenizer and hook names.
    Info { model: String },
    /// Run text through the model and save token ids, hook activations and logits
    /// (`[n_tokens, ...]` tensors) to a safetensors file.
    Run {
        model: String,
        #[command(flatten)]
        compute: ComputeArgs,
        #[arg(long, conflicts_with = "text_file")]
        text: Option<String>,
        #[arg(long)]
        text_file: Option<PathBuf>,
        /// A hook to record (e.g. `blocks.15.hook_resid_post`). Repeatable.
        #[arg(long = "hook")]
        hooks: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Do not prepend the BOS token.
        #[arg(long)]
        no_bos: bool,
    },
    /// Continue a prompt (greedy unless a temperature is given).
    Generate {
        model: String,
        #[command(flatten)]
        compute: ComputeArgs,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the model's chat template as a user message.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        #[arg(long)]
        temperature: Option<f32>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Perplexity on documents of a corpus (default: the last 20 Wikipedia summaries).
    Perplexity {
        model: String,
        #[command(flatten)]
        compute: ComputeArgs,
        #[arg(long, default_value = "wiki")]
        corpus: String,
        #[arg(long, default_value_t = 20)]
        documents: usize,
        /// Tokens per document at most.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
    },
}

fn load(model: &str, compute: &ComputeArgs) -> anyhow::Result<Model> {
    let path = monoscope_fetch::resolve_model(model)?;
    compute.load(&path, MatmulKind::F32)
}

pub fn run(command: ModelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Info { model } => info(&load(&model, &ComputeArgs::cpu())?),
        ModelCommand::Run {
            model,
            compute,
            text,
            text_file,
            hooks,
            out,
            no_bos,
        } => {
            let text = match (text, text_file) {
                (Some(t), None) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?,
                _ => bail!("give the text with --text or --text-file"),
            };
            run_text(&load(&model, &compute)?, &text, &hooks, &out, !no_bos)
        }
        ModelCommand::Generate {
            model,
            compute,
            prompt,
            chat,
            max_new_tokens,
            temperature,
            seed,
        } => {
            let model = load(&model, &compute)?;
            let mut options = GenerateOptions::greedy(max_new_tokens);
            if let Some(temperature) = temperature {
                options.sampling = monoscope_lm::Sampling::Sample {
                    temperature,
                    top_k: None,
                    top_p: Some(0.95),
                    seed,
                };
            }
            let text = match chat {
                // The template may write BOS itself (Llama 3, Gemma): encode_chat adds none then.
                true => {
                    let tokenizer = model.tokenizer();
                    let ids = tokenizer.encode_chat(&[monoscope_formats_chat(&prompt)], true)?;
                    let generation = model.generate(&ids, &options)?;
                    let n = generation.tokens.len() - usize::from(generation.stopped_on.is_some());
                    tokenizer.decode(&generation.tokens[..n])
                }
                false => model.generate_text(&prompt, &options)?,
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Perplexity {
            model,
            compute,
            corpus,
            documents,
            max_tokens,
        } => perplexity(&load(&model, &compute)?, &corpus, documents, max_tokens),
    }
}

fn monoscope_formats_chat(prompt: &str) -> monoscope_formats::ChatMessage {
    monoscope_formats::ChatMessage::new("user", prompt)
}

fn info(model: &Model) -> anyhow::Result<ExitCode> {
    let c = model.config();
    println!("name          {}", model.name());
    println!("sha256        {}", model.sha256());
    println!("architecture  {:?}", c.architecture);
    println!("layers        {}", c.n_layers);
    println!("d_model       {}", c.d_model);
    println!(
        "heads         {} query, {} key/value, head_dim {}",
        c.n_heads, c.n_kv_heads, c.head_dim
    );
    println!("d_ff          {}", c.d_ff);
    println!("vocab         {}", c.vocab_size);
    println!("context       {}", c.max_positions);
    println!("rope          theta {} ({:?})", c.rope_theta, c.rope_layout);
    if let Some(scaling) = &c.rope_scaling {
        println!("rope scaling  {scaling:?}");
    }
    println!("tied head     {}", c.tied_embeddings);
    println!("bos / eos     {:?} / {:?}", c.bos_token_id, c.eos_token_ids);
    println!("block         {:?}", c.block);
    println!(
        "weights       {:.2} GB in memory ({:?} arithmetic)",
        model.weight_bytes() as f64 / 1e9,
        model.matmul_kind()
    );
    let hooks = model.hook_names();
    println!(
        "hooks         {} (every block L in 0..={} has each blocks.L hook below)",
        hooks.len(),
        c.n_layers - 1
    );
    for hook in &hooks {
        let name = hook.to_string();
        match hook.layer() {
            Some(0) => println!(
                "  {:<32} width {}",
                name.replacen("blocks.0.", "blocks.L.", 1),
                model.hook_width(hook)
            ),
            Some(_) => {}
            None => println!("  {name:<32} width {}", model.hook_width(hook)),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_text(
    model: &Model,
    text: &str,
    hooks: &[String],
    out: &Path,
    bos: bool,
) -> anyhow::Result<ExitCode> {
    if text.is_empty() {
        bail!("the text is empty: nothing to run");
    }
    let ids = model
        .tokenizer()
        .encode(text, bos && model.tokenizer().bos_id().is_some())?;
    let hooks: Vec<HookName> = hooks
        .iter()
        .map(|h| model.hook(h))
        .collect::<Result<_, _>>()?;
    let options = ForwardOptions {
        record: hooks.clone(),
        interventions: Interventions::new(),
        stop_after_hooks: false,
        logits: Logits::All,
    };
    let output = model.forward(&TokenBatch::single(&ids)?, &options)?;
    let n = ids.len();
    let mut tensors: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = vec![(
        "token_ids".into(),
        ids.iter().flat_map(|i| i.to_le_bytes()).collect(),
        safetensors::Dtype::U32,
        vec![n],
    )];
    for hook in &hooks {
        let values = output.activation_host(hook)?;
        tensors.push((
            hook.to_string(),
            f32_bytes(&values),
            safetensors::Dtype::F32,
            vec![n, model.d_model()],
        ));
    }
    let logits = output.logits_host()?;
    tensors.push((
        "logits".into(),
        f32_bytes(&logits),
        safetensors::Dtype::F32,
        vec![n, logits.len() / n],
    ));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, bytes, dtype, shape)| {
            Ok((
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, None)?;
    monoscope_core::atomic::write(out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{} tokens, {} hooks and logits written to {}",
        n,
        hooks.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn perplexity(
    model: &Model,
    corpus: &str,
    documents: usize,
    max_tokens: usize,
) -> anyhow::Result<ExitCode> {
    let path = monoscope_fetch::resolve_corpus(corpus)?;
    let docs = monoscope_capture::read_corpus(
        &path,
        monoscope_capture::CorpusFormat::Auto,
        "extract",
        monoscope_capture::ParagraphSplit::File,
    )?;
    // The last documents in corpus order: the capture samples from all of them by seed, so this
    // is a fixed, documented set rather than a guarantee of never having been captured.
    let chosen = &docs[docs.len().saturating_sub(documents)..];
    let tokenizer = model.tokenizer();
    let (mut nll, mut count) = (0f64, 0usize);
    for doc in chosen {
        let mut ids = tokenizer.encode(&doc.text, tokenizer.bos_id().is_some())?;
        ids.truncate(max_tokens);
        if ids.len() < 2 {
            continue;
        }
        let log_probs = model.log_probs(&TokenBatch::single(&ids)?, &Interventions::new())?;
        for lp in log_probs.into_iter().filter(|v| v.is_finite()) {
            nll -= f64::from(lp);
            count += 1;
        }
    }
    let ppl = (nll / count.max(1) as f64).exp();
    println!(
        "perplexity {ppl:.2} over {count} tokens of {} documents ({})",
        chosen.len(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
