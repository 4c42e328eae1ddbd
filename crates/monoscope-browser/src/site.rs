//! Writing the static site: page assets plus the run's data as small script files.
//!
//! Layout of a site directory:
//! - `index.html`, `app.js`, `style.css`: the page (hash routes `#/`, `#/features`,
//!   `#/feature/N`, `#/map`, `#/steering`, and for the analyses a run has `#/families`,
//!   `#/coverage`, `#/attribution`, `#/contrast`), embedded in this crate;
//! - `data/index.js`: run facts, headline metrics and one column per field of the feature list
//!   (label, frequency, max activation, cluster, score), for search and sorting;
//! - `data/features/NNNN.js`: features `NNNN·chunk .. (NNNN+1)·chunk`, each with its evidence,
//!   label and scores, neighbours (with their labels), cluster and, with a split stage, its
//!   parents in the smaller SAEs of its family and its children in the larger ones;
//! - `data/map.js`, `data/steering.js`: the 2-D map (with each feature's family when there is a
//!   split stage) and the steering report, when present;
//! - `data/families.js`, `data/coverage.js`, `data/attribution.js`, `data/contrast.js`: the
//!   largest families as trees, concept coverage, the steer stage's attributions and its
//!   contrastive searches, each only when the run has it.
//!
//! Each data file is one call `monoscope.loaded(name, json)`: a script, not a JSON document,
//! so that the site works when opened from disk.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use std::collections::HashMap;

use monoscope_artifacts::cluster::ClustersFile;
use monoscope_artifacts::label::{EvidenceReader, FeatureEvidence, LabelRecord};
use monoscope_artifacts::train::EvalReport;

use crate::analyses::{self, SplitView, to_value};
use crate::error::{BrowserError, Result};
use crate::inputs::RunFiles;

/// The page a site opens with.
pub const INDEX_FILE: &str = "index.html";
const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// How to write a site.
#[derive(Debug, Clone)]
pub struct SiteOptions {
    /// Shown in the page header and title.
    pub title: String,
    /// Features per data file: one feature page loads one file of this many.
    pub chunk_size: usize,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            title: "monoscope".into(),
            chunk_size: 32,
        }
    }
}

/// What was written, and the run's headline for the end-of-run summary.
#[derive(Debug, Clone)]
pub struct SiteSummary {
    pub features: usize,
    pub labelled: usize,
    pub chunks: usize,
    /// Headline metrics from `eval.json` (L0, FVU, ce_loss_score, dead fraction) when present.
    pub metrics: Map<String, Value>,
    /// A few labelled features to name in the summary: (id, label, score).
    pub examples: Vec<(usize, String, Option<f64>)>,
}

/// Writes the site for `files` into `out` (replaced atomically when it exists).
pub fn write_site(files: &RunFiles, options: &SiteOptions, out: &Path) -> Result<SiteSummary> {
    if options.chunk_size == 0 {
        return Err(BrowserError::Invalid(
            "chunk_size = 0: expected at least 1".into(),
        ));
    }
    let mut summary = None;
    monoscope_core::atomic::write_dir(out, |tmp| {
        summary = Some(fill(files, options, tmp).map_err(std::io::Error::other)?);
        Ok(())
    })
    .map_err(|e| match e.downcast::<BrowserError>() {
        Ok(inner) => inner,
        Err(e) => BrowserError::io(out, e),
    })?;
    Ok(summary.expect("fill ran"))
}

fn fill(files: &RunFiles, options: &SiteOptions, dir: &Path) -> Result<SiteSummary> {
    let info = files.sae_info()?;
    let d_sae = info.d_sae;
    let eval = files.eval()?;
    let labels = read_labels(files, d_sae)?;
    let neighbours = match files.neighbours() {
        Some(outputs) => outputs.neighbours(d_sae)?,
        None => vec![None; d_sae],
    };
    let clusters = match &files.clusters {
        Some(outputs) => outputs.clusters()?,
        None => None,
    };
    let assignment = clusters.as_ref().map(|c| cluster_assignment(c, d_sae));
    let split = match (files.split_file()?, &files.split) {
        (Some(file), Some(outputs)) => Some(SplitView::new(file, d_sae, &outputs.split_path())?),
        _ => None,
    };
    let analyses = read_analyses(files, split.as_ref(), d_sae)?;
    let cluster_words: HashMap<u32, &[String]> = clusters
        .iter()
        .flat_map(|c| &c.clusters)
        .map(|c| (c.id, c.top_words.as_slice()))
        .collect();

    std::fs::create_dir_all(dir.join("data/features")).map_err(|e| BrowserError::io(dir, e))?;
    for (name, text) in [
        (
            INDEX_FILE,
            INDEX_HTML.replace("{{TITLE}}", &html_text(&options.title)),
        ),
        ("app.js", APP_JS.to_string()),
        ("style.css", STYLE_CSS.to_string()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| BrowserError::io(&path, e))?;
    }

    // Columns of the feature list: evidence when present, else the train stage's eval.
    let mut frequency: Vec<Option<f64>> =
        column(eval.as_ref().map(|e| &e.feature_frequency), d_sae);
    let mut max_activation: Vec<Option<f64>> =
        column(eval.as_ref().map(|e| &e.feature_max_activation), d_sae);
    let label_column: Vec<Option<&str>> = labels
        .iter()
        .map(|l| l.as_ref().map(|l| l.label.as_str()))
        .collect();
    let score_column: Vec<Option<f64>> = labels
        .iter()
        .map(|l| l.as_ref().and_then(headline_score))
        .collect();

    // Feature chunks, streaming the evidence (the one large input) in feature order.
    let mut evidence = EvidenceStream::open(files, d_sae)?;
    let mut chunks = 0;
    for start in (0..d_sae).step_by(options.chunk_size) {
        let end = (start + options.chunk_size).min(d_sae);
        let mut features = Vec::with_capacity(end - start);
        for id in start..end {
            let mut record = Map::new();
            record.insert("id".into(), id.into());
            if let Some(ev) = evidence.take(id)? {
                frequency[id] = Some(ev.frequency);
                max_activation[id] = Some(f64::from(ev.max_activation));
                let mut value = to_value(&ev)?;
                if let Some(obj) = value.as_object_mut() {
                    obj.remove("feature");
                }
                record.insert("evidence".into(), value);
            }
            if let Some(label) = &labels[id] {
                record.insert("label".into(), to_value(label)?);
            }
            if let Some(list) = &neighbours[id] {
                let with_labels: Vec<Value> = list
                    .iter()
                    .map(|n| {
                        json!({
                            "feature": n.feature,
                            "cosine": n.cosine,
                            "label": label_column.get(n.feature as usize).copied().flatten(),
                        })
                    })
                    .collect();
                record.insert("neighbours".into(), Value::Array(with_labels));
            }
            if let Some(view) = split.as_ref().filter(|v| v.has_family()) {
                record.insert("split".into(), view.feature(id));
            }
            if let Some(c) = assignment.as_ref().and_then(|a| a[id]) {
                record.insert(
                    "cluster".into(),
                    json!({ "id": c, "top_words": cluster_words.get(&c).copied().unwrap_or_default() }),
                );
            }
            features.push(Value::Object(record));
        }
        let name = format!("chunk-{}", start / options.chunk_size);
        let path = dir.join(format!(
            "data/features/{:04}.js",
            start / options.chunk_size
        ));
        write_script(
            &path,
            &name,
            &json!({ "start": start, "features": features }),
        )?;
        chunks += 1;
    }

    let metrics = headline_metrics(eval.as_ref());
    let columns = json!({
        "label": label_column,
        "frequency": frequency,
        "max_activation": max_activation,
        "cluster": assignment,
        "score": score_column,
    });
    let family = split
        .as_ref()
        .filter(|v| v.has_family())
        .map(SplitView::main_family);
    let has_map = write_map(files, assignment.as_deref(), family, dir)?;
    for (file, name, data) in &analyses.scripts {
        write_script(&dir.join("data").join(file), name, data)?;
    }
    let steering = files.steering_report()?;
    if let Some(report) = &steering {
        write_script(
            &dir.join("data/steering.js"),
            "steering",
            &to_value(report)?,
        )?;
    }
    let label_summary = match &files.labels {
        Some(outputs) => outputs.summary()?,
        None => None,
    };
    let index = json!({
        "title": options.title,
        "model": info.metadata.model_name,
        "hook": info.metadata.hook_name,
        "architecture": info.architecture,
        "d_in": info.d_in,
        "d_sae": d_sae,
        "k": info.k,
        "chunk_size": options.chunk_size,
        "metrics": metrics,
        "label_summary": label_summary,
        "clusters": clusters.as_ref().map(cluster_list),
        "has": {
            "evidence": files.evidence().is_some(),
            "labels": files.labelled().is_some(),
            "neighbours": files.neighbours().is_some(),
            "map": has_map,
            "steering": steering.is_some(),
            "families": analyses.has("families"),
            "coverage": analyses.has("coverage"),
            "attribution": analyses.has("attribution"),
            "contrast": analyses.has("contrast"),
        },
        "split": split.as_ref().filter(|v| v.has_family()).map(SplitView::summary),
        "columns": columns,
    });
    write_script(&dir.join("data/index.js"), "index", &index)?;

    let labelled = labels.iter().filter(|l| l.is_some()).count();
    Ok(SiteSummary {
        features: d_sae,
        labelled,
        chunks,
        metrics,
        examples: examples(&labels, &frequency),
    })
}

/// Each feature's label record, when it has one.
fn read_labels(files: &RunFiles, d_sae: usize) -> Result<Vec<Option<LabelRecord>>> {
    let mut labels = vec![None; d_sae];
    if let Some(outputs) = files.labelled() {
        for (feature, record) in outputs.labels_by_feature(d_sae)? {
            labels[feature as usize] = Some(record);
        }
    }
    Ok(labels)
}

/// Each feature's cluster; a feature past the end of the assignment belongs to none.
fn cluster_assignment(clusters: &ClustersFile, d_sae: usize) -> Vec<Option<u32>> {
    (0..d_sae)
        .map(|i| clusters.assignment.get(i).copied())
        .collect()
}

/// The clusters without their member lists (those are in the assignment column).
fn cluster_list(clusters: &ClustersFile) -> Value {
    let slim: Vec<Value> = clusters
        .clusters
        .iter()
        .map(|c| json!({ "id": c.id, "size": c.size, "top_words": c.top_words }))
        .collect();
    json!({
        "method": clusters.method,
        "modularity": clusters.modularity,
        "clusters": slim,
    })
}

/// The data scripts of the analyses a run has: (file under `data/`, script name, data).
struct Analyses {
    scripts: Vec<(&'static str, &'static str, Value)>,
}

impl Analyses {
    fn has(&self, name: &str) -> bool {
        self.scripts.iter().any(|(_, n, _)| *n == name)
    }
}

/// Reads the analyses; one with nothing in it (no family to split, no prompts, no searches)
/// gets no page, so that a run without it shows the same site as before.
fn read_analyses(files: &RunFiles, split: Option<&SplitView>, d_sae: usize) -> Result<Analyses> {
    let mut scripts = Vec::new();
    if let Some(view) = split.filter(|v| v.has_family()) {
        scripts.push(("families.js", "families", view.families()));
    }
    if let (Some(file), Some(outputs)) = (files.coverage_file()?, &files.coverage)
        && !file.concepts.is_empty()
    {
        let main_name = split.map(SplitView::main_name);
        let data = analyses::coverage(&file, main_name, d_sae, &outputs.coverage_path())?;
        scripts.push(("coverage.js", "coverage", data));
    }
    if let (Some(list), Some(outputs)) = (files.attributions()?, &files.steering)
        && !list.is_empty()
    {
        let data = analyses::attributions(&list, d_sae, &outputs.attributions_path())?;
        scripts.push(("attribution.js", "attribution", data));
    }
    if let (Some(list), Some(outputs)) = (files.contrasts()?, &files.steering)
        && !list.is_empty()
    {
        let data = analyses::contrasts(&list, d_sae, &outputs.contrasts_path())?;
        scripts.push(("contrast.js", "contrast", data));
    }
    Ok(Analyses { scripts })
}

fn write_map(
    files: &RunFiles,
    assignment: Option<&[Option<u32>]>,
    family: Option<&[Option<u32>]>,
    dir: &Path,
) -> Result<bool> {
    let Some(map) = files
        .clusters
        .as_ref()
        .map(|c| c.map())
        .transpose()?
        .flatten()
    else {
        return Ok(false);
    };
    let data = json!({
        "method": map.method,
        "neighbourhood_preservation": map.neighbourhood_preservation,
        "x": map.x,
        "y": map.y,
        "cluster": assignment,
        "family": family,
    });
    write_script(&dir.join("data/map.js"), "map", &data)?;
    Ok(true)
}

fn column<T: Copy + Into<f64>>(values: Option<&Vec<T>>, d_sae: usize) -> Vec<Option<f64>> {
    (0..d_sae)
        .map(|i| values.and_then(|v| v.get(i)).map(|&x| x.into()))
        .collect()
}

/// The score shown in the feature list: detection when scored, else fuzzing.
fn headline_score(label: &LabelRecord) -> Option<f64> {
    label.scores.detection.or(label.scores.fuzzing)
}

fn headline_metrics(eval: Option<&EvalReport>) -> Map<String, Value> {
    let mut metrics = Map::new();
    let Some(eval) = eval else {
        return metrics;
    };
    metrics.insert("l0".into(), eval.l0.into());
    metrics.insert("fvu".into(), eval.fvu.into());
    metrics.insert("dead_fraction".into(), eval.dead_fraction.into());
    metrics.insert("dense_fraction".into(), eval.dense_fraction.into());
    metrics.insert("tokens".into(), eval.tokens.into());
    if let Some(splice) = &eval.splice {
        metrics.insert("ce_loss_score".into(), splice.ce_loss_score.into());
        metrics.insert("ce_loss_clean".into(), splice.ce_loss_clean.into());
        metrics.insert("ce_loss_with_sae".into(), splice.ce_loss_with_sae.into());
        metrics.insert("kl_div_with_sae".into(), splice.kl_div_with_sae.into());
    }
    metrics
}

/// Three labelled features for the run summary: the best-scored labels with words in them, a
/// model's before the statistical labeller's.
fn examples(
    labels: &[Option<LabelRecord>],
    frequency: &[Option<f64>],
) -> Vec<(usize, String, Option<f64>)> {
    let mut candidates: Vec<(usize, String, Option<f64>, f64)> = labels
        .iter()
        .enumerate()
        .filter_map(|(id, l)| {
            let l = l.as_ref()?;
            let label = l.label.trim().to_string();
            // A label of digits or punctuation (a feature for "0" or ",") says little about
            // what the dictionary found.
            if !label.chars().any(char::is_alphabetic) {
                return None;
            }
            let score = headline_score(l);
            // A model's own words first: they are what the summary is meant to show.
            let by_model = l.explainer != "statistical";
            let rank = f64::from(u8::from(by_model)) * 100.0
                + score.unwrap_or(-1.0) * 10.0
                + frequency[id].unwrap_or(0.0);
            Some((id, label, score, rank))
        })
        .collect();
    candidates.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
    candidates
        .into_iter()
        .take(3)
        .map(|(id, label, score, _)| (id, label, score))
        .collect()
}

/// Reads the evidence one feature at a time, in feature order.
struct EvidenceStream {
    reader: Option<EvidenceReader>,
    /// The record read ahead: the next feature that has evidence.
    pending: Option<FeatureEvidence>,
}

impl EvidenceStream {
    fn open(files: &RunFiles, d_sae: usize) -> Result<EvidenceStream> {
        let reader = files
            .evidence()
            .map(|l| l.evidence_reader(d_sae))
            .transpose()?;
        Ok(EvidenceStream {
            reader,
            pending: None,
        })
    }

    /// The evidence of feature `id`, if the file has it. Called for every id in increasing
    /// order; the reader checks that the file's features increase and stay below `d_sae`, so a
    /// record read ahead is never behind `id`.
    fn take(&mut self, id: usize) -> Result<Option<FeatureEvidence>> {
        if self.pending.is_none()
            && let Some(reader) = self.reader.as_mut()
        {
            match reader.next() {
                Some(evidence) => self.pending = Some(evidence?),
                None => self.reader = None,
            }
        }
        match &self.pending {
            Some(evidence) if evidence.feature as usize == id => Ok(self.pending.take()),
            _ => Ok(None),
        }
    }
}

fn write_script(path: &Path, name: &str, value: &Value) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| BrowserError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let result = (|| {
        write!(out, "monoscope.loaded({}, ", serde_json::to_string(name)?)?;
        serde_json::to_writer(&mut out, value)?;
        writeln!(out, ");")?;
        out.flush()
    })();
    result.map_err(|e| BrowserError::io(path, e))
}

/// Whether `dir` holds a site (its `index.html`).
pub fn is_site_dir(dir: &Path) -> bool {
    dir.join(INDEX_FILE).is_file()
}

/// Escapes text for an HTML text node (only the page title is ever put into markup).
pub fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
