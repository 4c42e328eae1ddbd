//! Writing the static site: page assets plus the run's data as small script files.
//!
//! Layout of a site directory:
//! - `index.html`, `app.js`, `style.css`: the page (hash routes `#/`, `#/features`,
//!   `#/feature/N`, `#/map`, `#/steering`), embedded in this crate;
//! - `data/index.js`: run facts, headline metrics and one column per field of the feature list
//!   (label, frequency, max activation, cluster, score), for search and sorting;
//! - `data/features/NNNN.js`: features `NNNN·chunk .. (NNNN+1)·chunk`, each with its evidence,
//!   label and scores, neighbours (with their labels) and cluster;
//! - `data/map.js`, `data/steering.js`: the 2-D map and the steering report, when present.
//!
//! Each data file is one call `monoscope.loaded(name, json)`: a script, not a JSON document,
//! so that the site works when opened from disk.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{BrowserError, Result};
use crate::inputs::{RunFiles, feature_id, for_each_json_line};

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
    let cfg = files.sae_config()?;
    let cfg_path = files.sae_dir.join("cfg.json");
    let d_sae = cfg
        .get("d_sae")
        .and_then(Value::as_u64)
        .ok_or_else(|| BrowserError::Invalid(format!("{}: no `d_sae`", cfg_path.display())))?
        as usize;
    let eval = files.eval()?;
    let labels = read_labels(files, d_sae)?;
    let neighbours = read_neighbours(files, d_sae)?;
    let clusters = files.clusters()?;
    let assignment = cluster_assignment(clusters.as_ref(), d_sae);
    let cluster_words = cluster_words(clusters.as_ref());

    std::fs::create_dir_all(dir.join("data/features")).map_err(|e| BrowserError::io(dir, e))?;
    for (name, text) in [
        (
            "index.html",
            INDEX_HTML.replace("{{TITLE}}", &html_text(&options.title)),
        ),
        ("app.js", APP_JS.to_string()),
        ("style.css", STYLE_CSS.to_string()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| BrowserError::io(&path, e))?;
    }

    // Columns of the feature list: evidence when present, else the train stage's eval.
    let mut frequency: Vec<Option<f64>> = column(eval.as_ref(), "feature_frequency", d_sae);
    let mut max_activation: Vec<Option<f64>> =
        column(eval.as_ref(), "feature_max_activation", d_sae);
    let label_column: Vec<Value> = labels
        .iter()
        .map(|l| {
            l.as_ref()
                .and_then(|l| l.get("label"))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect();
    let score_column: Vec<Value> = labels.iter().map(|l| headline_score(l.as_ref())).collect();

    // Feature chunks, streaming the evidence (the one large input) in feature order.
    let mut evidence = EvidenceStream::open(files)?;
    let mut chunks = 0;
    for start in (0..d_sae).step_by(options.chunk_size) {
        let end = (start + options.chunk_size).min(d_sae);
        let mut features = Vec::with_capacity(end - start);
        for id in start..end {
            let mut record = Map::new();
            record.insert("id".into(), id.into());
            if let Some(mut ev) = evidence.take(id, d_sae)? {
                if let Some(f) = ev.get("frequency").and_then(Value::as_f64) {
                    frequency[id] = Some(f);
                }
                if let Some(m) = ev.get("max_activation").and_then(Value::as_f64) {
                    max_activation[id] = Some(m);
                }
                if let Some(obj) = ev.as_object_mut() {
                    obj.remove("feature");
                }
                record.insert("evidence".into(), ev);
            }
            if let Some(label) = &labels[id] {
                record.insert("label".into(), label.clone());
            }
            if let Some(list) = &neighbours[id] {
                let with_labels: Vec<Value> = list
                    .iter()
                    .map(|n| {
                        let other = n.get("feature").and_then(Value::as_u64).unwrap_or(0) as usize;
                        json!({
                            "feature": other,
                            "cosine": n.get("cosine").cloned().unwrap_or(Value::Null),
                            "label": label_column.get(other).cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                record.insert("neighbours".into(), Value::Array(with_labels));
            }
            if let Some(c) = assignment.as_ref().and_then(|a| a[id]) {
                record.insert(
                    "cluster".into(),
                    json!({ "id": c, "top_words": cluster_words.get(&c).cloned().unwrap_or_default() }),
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
        "cluster": assignment.clone().map(Value::from).unwrap_or(Value::Null),
        "score": score_column,
    });
    let meta = cfg.get("metadata").cloned().unwrap_or(Value::Null);
    let has_map = write_map(files, &assignment, dir)?;
    let steering = files.steering_report()?;
    if let Some(report) = &steering {
        write_script(&dir.join("data/steering.js"), "steering", report)?;
    }
    let label_summary = files.label_summary()?;
    let index = json!({
        "title": options.title,
        "model": meta.get("model_name"),
        "hook": meta.get("hook_name"),
        "architecture": cfg.get("architecture"),
        "d_in": cfg.get("d_in"),
        "d_sae": d_sae,
        "k": cfg.get("k"),
        "chunk_size": options.chunk_size,
        "metrics": metrics,
        "label_summary": label_summary,
        "clusters": clusters.as_ref().map(cluster_list),
        "has": {
            "evidence": files.evidence_path().is_some(),
            "labels": files.labels_path().is_some(),
            "neighbours": files.neighbours_path().is_some(),
            "map": has_map,
            "steering": steering.is_some(),
        },
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

/// Per-feature label records from `labels.jsonl`.
fn read_labels(files: &RunFiles, d_sae: usize) -> Result<Vec<Option<Value>>> {
    let mut labels = vec![None; d_sae];
    if let Some(path) = files.labels_path() {
        for_each_json_line(&path, |record| {
            let id = feature_id(&record, d_sae, &path)?;
            labels[id] = Some(record);
            Ok(())
        })?;
    }
    Ok(labels)
}

fn read_neighbours(files: &RunFiles, d_sae: usize) -> Result<Vec<Option<Vec<Value>>>> {
    let mut neighbours = vec![None; d_sae];
    if let Some(path) = files.neighbours_path() {
        for_each_json_line(&path, |record| {
            let id = feature_id(&record, d_sae, &path)?;
            let list = record.get("neighbours").and_then(Value::as_array).cloned();
            neighbours[id] = list;
            Ok(())
        })?;
    }
    Ok(neighbours)
}

fn cluster_assignment(clusters: Option<&Value>, d_sae: usize) -> Option<Vec<Option<u64>>> {
    let list = clusters?.get("assignment")?.as_array()?;
    Some(
        (0..d_sae)
            .map(|i| list.get(i).and_then(Value::as_u64))
            .collect(),
    )
}

fn cluster_words(clusters: Option<&Value>) -> std::collections::HashMap<u64, Value> {
    let mut words = std::collections::HashMap::new();
    let list = clusters
        .and_then(|c| c.get("clusters"))
        .and_then(Value::as_array);
    for c in list.into_iter().flatten() {
        if let Some(id) = c.get("id").and_then(Value::as_u64) {
            words.insert(id, c.get("top_words").cloned().unwrap_or(Value::Null));
        }
    }
    words
}

/// The clusters without their member lists (those are in the assignment column).
fn cluster_list(clusters: &Value) -> Value {
    let list = clusters.get("clusters").and_then(Value::as_array);
    let slim: Vec<Value> = list
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "id": c.get("id"),
                "size": c.get("size"),
                "top_words": c.get("top_words"),
            })
        })
        .collect();
    json!({
        "method": clusters.get("method"),
        "modularity": clusters.get("modularity"),
        "clusters": slim,
    })
}

fn write_map(files: &RunFiles, assignment: &Option<Vec<Option<u64>>>, dir: &Path) -> Result<bool> {
    let Some(map) = files.map()? else {
        return Ok(false);
    };
    let data = json!({
        "method": map.get("method"),
        "neighbourhood_preservation": map.get("neighbourhood_preservation"),
        "x": map.get("x"),
        "y": map.get("y"),
        "cluster": assignment,
    });
    write_script(&dir.join("data/map.js"), "map", &data)?;
    Ok(true)
}

fn column(eval: Option<&Value>, key: &str, d_sae: usize) -> Vec<Option<f64>> {
    let list = eval.and_then(|e| e.get(key)).and_then(Value::as_array);
    (0..d_sae)
        .map(|i| list.and_then(|l| l.get(i)).and_then(Value::as_f64))
        .collect()
}

/// The score shown in the feature list: detection when scored, else fuzzing.
fn headline_score(label: Option<&Value>) -> Value {
    let scores = label.and_then(|l| l.get("scores"));
    let pick = |key| {
        scores
            .and_then(|s| s.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    };
    pick("detection")
        .or_else(|| pick("fuzzing"))
        .unwrap_or(Value::Null)
}

fn headline_metrics(eval: Option<&Value>) -> Map<String, Value> {
    let mut metrics = Map::new();
    let Some(eval) = eval else {
        return metrics;
    };
    for key in ["l0", "fvu", "dead_fraction", "dense_fraction", "tokens"] {
        if let Some(v) = eval.get(key) {
            metrics.insert(key.into(), v.clone());
        }
    }
    for key in [
        "ce_loss_score",
        "ce_loss_clean",
        "ce_loss_with_sae",
        "kl_div_with_sae",
    ] {
        let v = eval
            .get(key)
            .or_else(|| eval.get("splice").and_then(|s| s.get(key)));
        if let Some(v) = v.filter(|v| !v.is_null()) {
            metrics.insert(key.into(), v.clone());
        }
    }
    metrics
}

/// Three labelled features for the run summary: the best-scored labels, a model's before the
/// statistical labeller's.
fn examples(
    labels: &[Option<Value>],
    frequency: &[Option<f64>],
) -> Vec<(usize, String, Option<f64>)> {
    let mut candidates: Vec<(usize, String, Option<f64>, f64)> = labels
        .iter()
        .enumerate()
        .filter_map(|(id, l)| {
            let l = l.as_ref()?;
            let label = l.get("label")?.as_str()?.trim().to_string();
            if label.is_empty() {
                return None;
            }
            let score = headline_score(Some(l)).as_f64();
            // A model's own words first: they are what the summary is meant to show.
            let by_model = l.get("explainer").and_then(Value::as_str) != Some("statistical");
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

/// Reads `evidence.jsonl` one record at a time, in feature order.
struct EvidenceStream {
    path: std::path::PathBuf,
    lines: Option<std::io::Lines<std::io::BufReader<std::fs::File>>>,
    line: usize,
    pending: Option<(usize, Value)>,
}

impl EvidenceStream {
    fn open(files: &RunFiles) -> Result<EvidenceStream> {
        let path = files.evidence_path();
        let lines = match &path {
            Some(p) => {
                let file = std::fs::File::open(p).map_err(|e| BrowserError::io(p, e))?;
                Some(std::io::BufRead::lines(std::io::BufReader::new(file)))
            }
            None => None,
        };
        Ok(EvidenceStream {
            path: path.unwrap_or_default(),
            lines,
            line: 0,
            pending: None,
        })
    }

    /// The record of feature `id`, if the file has one; ids must come in increasing order.
    fn take(&mut self, id: usize, d_sae: usize) -> Result<Option<Value>> {
        loop {
            if let Some((next, _)) = &self.pending {
                if *next > id {
                    return Ok(None);
                }
                let (next, value) = self.pending.take().expect("checked");
                if next == id {
                    return Ok(Some(value));
                }
                return Err(BrowserError::Invalid(format!(
                    "{}, line {}: feature {next} comes after feature {id}; the file must be in feature order",
                    self.path.display(),
                    self.line
                )));
            }
            let Some(lines) = self.lines.as_mut() else {
                return Ok(None);
            };
            let Some(line) = lines.next() else {
                self.lines = None;
                return Ok(None);
            };
            self.line += 1;
            let line = line.map_err(|e| BrowserError::io(&self.path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line).map_err(|e| BrowserError::Parse {
                path: self.path.clone(),
                line: self.line,
                message: e.to_string(),
            })?;
            let next = feature_id(&value, d_sae, &self.path)?;
            self.pending = Some((next, value));
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

/// Escapes text for an HTML text node (only the page title is ever put into markup).
pub fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
