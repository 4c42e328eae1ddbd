//! `monoscope split <run>` and `monoscope coverage <run>`: the feature-splitting tree and the
//! completeness-against-frequency table of a run's split and coverage stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use monoscope_artifacts::coverage::{self, CoverageFile, CoverageOutputs};
use monoscope_artifacts::label::{self, LabelOutputs};
use monoscope_artifacts::split::{self, SplitFile, SplitOutputs};
use monoscope_artifacts::{Run, locate_stage};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// A run directory, or a split stage directory.
    pub run: PathBuf,
    /// Show this feature's descendants in the larger SAEs (a feature of the smallest SAE,
    /// unless `--member` names another).
    #[arg(long)]
    pub feature: Option<u32>,
    /// The family member `--feature` belongs to (`main`, or a sweep member's name).
    #[arg(long)]
    pub member: Option<String>,
    /// How many sizes below the feature to show (default: all).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The split stage's id, when the run has several.
    #[arg(long)]
    pub stage: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CoverageArgs {
    /// A run directory, or a coverage stage directory.
    pub run: PathBuf,
    /// Print `coverage.json` instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// The coverage stage's id, when the run has several.
    #[arg(long)]
    pub stage: Option<String>,
}

pub fn split(args: SplitArgs) -> anyhow::Result<ExitCode> {
    let dir = locate_stage(
        &args.run,
        &[split::KIND],
        args.stage.as_deref(),
        "feature splitting",
    )?;
    let outputs = SplitOutputs::new(&dir);
    let file = outputs
        .split()?
        .with_context(|| format!("{}: the split stage wrote no split file", dir.display()))?;
    match args.feature {
        None => {
            let summary = split_summary(&file);
            match args.json {
                true => println!("{}", serde_json::to_string_pretty(&summary)?),
                false => print_split_summary(&file, &summary),
            }
        }
        Some(feature) => {
            let member = match &args.member {
                None => 0,
                Some(name) => file
                    .members
                    .iter()
                    .position(|m| &m.name == name)
                    .with_context(|| {
                        format!(
                            "no member `{name}` in the family (its members: {})",
                            file.members
                                .iter()
                                .map(|m| m.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?,
            };
            let d_sae = file.members[member].d_sae;
            if feature as usize >= d_sae {
                bail!(
                    "--feature {feature}: member `{}` has features 0..{d_sae}",
                    file.members[member].name
                );
            }
            let labels = main_labels(&dir, &file)?;
            let depth = args.depth.unwrap_or(file.members.len());
            let tree = descendants(&file, member, feature, depth, &labels);
            match args.json {
                true => println!("{}", serde_json::to_string_pretty(&tree)?),
                false => print_tree(&tree, 0),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Per member and per level: how the features split.
fn split_summary(file: &SplitFile) -> serde_json::Value {
    let members: Vec<_> = file
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "d_sae": m.d_sae,
                "main": m.main,
                "live": m.firings.iter().filter(|&&n| n > 0).count(),
            })
        })
        .collect();
    let levels: Vec<_> = file
        .levels
        .iter()
        .map(|level| {
            let mut children = vec![0usize; file.members[level.parent_member].d_sae];
            for p in level.parent.iter().flatten() {
                children[*p as usize] += 1;
            }
            let with_parent: usize = children.iter().sum();
            let parents = children.iter().filter(|&&n| n > 0).count();
            json!({
                "parent": file.members[level.parent_member].name,
                "child": file.members[level.child_member].name,
                "children_with_a_parent": with_parent,
                "children_without": level.parent.len() - with_parent,
                "parents_with_children": parents,
                "children_per_parent": with_parent as f64 / parents.max(1) as f64,
                "parents_split_in_two_or_more": children.iter().filter(|&&n| n >= 2).count(),
            })
        })
        .collect();
    json!({
        "tokens": file.tokens,
        "criterion": file.criterion,
        "members": members,
        "levels": levels,
    })
}

fn print_split_summary(file: &SplitFile, summary: &serde_json::Value) {
    println!(
        "family of {} SAEs over {} tokens:",
        file.members.len(),
        file.tokens
    );
    for m in summary["members"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:>8} features, {:>8} fired{}",
            m["name"].as_str().unwrap_or_default(),
            m["d_sae"],
            m["live"],
            if m["main"] == true { "  (main)" } else { "" }
        );
    }
    println!();
    println!(
        "{:<16} {:<16} {:>10} {:>10} {:>12} {:>10}",
        "parent", "child", "linked", "unlinked", "per parent", "split 2+"
    );
    for l in summary["levels"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<16} {:>10} {:>10} {:>12.2} {:>10}",
            l["parent"].as_str().unwrap_or_default(),
            l["child"].as_str().unwrap_or_default(),
            // A JSON value's Display ignores the width: format it as a string first.
            l["children_with_a_parent"].to_string(),
            l["children_without"].to_string(),
            l["children_per_parent"].as_f64().unwrap_or_default(),
            l["parents_split_in_two_or_more"].to_string(),
        );
    }
    println!("\n{}", file.criterion);
}

/// The run's labels of the main SAE, when the split stage sits in a run with a label stage.
fn main_labels(dir: &Path, file: &SplitFile) -> anyhow::Result<BTreeMap<u32, String>> {
    let Some(main) = file.members.iter().find(|m| m.main) else {
        return Ok(BTreeMap::new());
    };
    let Some(run) = dir.parent().filter(|p| Run::is_run_dir(p)) else {
        return Ok(BTreeMap::new());
    };
    let Some(stage) = Run::open(run)?.find(&[label::KIND], None, "labels")? else {
        return Ok(BTreeMap::new());
    };
    let labels = LabelOutputs::new(stage.dir);
    if !labels.has_labels() {
        return Ok(BTreeMap::new());
    }
    Ok(labels
        .labels_by_feature(main.d_sae)?
        .into_iter()
        .map(|(feature, record)| (feature, record.label))
        .collect())
}

/// `feature` of `member` and its descendants down `depth` sizes, as nested JSON.
fn descendants(
    file: &SplitFile,
    member: usize,
    feature: u32,
    depth: usize,
    labels: &BTreeMap<u32, String>,
) -> serde_json::Value {
    let m = &file.members[member];
    let f = feature as usize;
    let link = file
        .levels
        .iter()
        .find(|l| l.child_member == member)
        .map(|l| {
            json!({
                "coactivation": l.coactivation[f],
                "cosine": l.cosine[f],
            })
        });
    let children: Vec<_> = match depth {
        0 => Vec::new(),
        _ => file
            .children(member, feature)
            .into_iter()
            .map(|c| descendants(file, member + 1, c, depth - 1, labels))
            .collect(),
    };
    json!({
        "member": m.name,
        "feature": feature,
        "firings": m.firings[f],
        "top_tokens": m.top_tokens[f],
        "label": m.main.then(|| labels.get(&feature)).flatten(),
        "link": link,
        "children": children,
    })
}

fn print_tree(node: &serde_json::Value, indent: usize) {
    let tokens: Vec<String> = node["top_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{:?}", t.as_str().unwrap_or_default()))
        .collect();
    let link = match node["link"].is_object() {
        true => format!(
            "  (co-activation {:.2}, cosine {:.2})",
            node["link"]["coactivation"].as_f64().unwrap_or_default(),
            node["link"]["cosine"].as_f64().unwrap_or_default()
        ),
        false => String::new(),
    };
    let label = node["label"]
        .as_str()
        .map(|l| format!("  — {l}"))
        .unwrap_or_default();
    println!(
        "{:indent$}{}#{}  {} firings  [{}]{link}{label}",
        "",
        node["member"].as_str().unwrap_or_default(),
        node["feature"],
        node["firings"],
        tokens.join(", "),
        indent = indent * 2
    );
    for child in node["children"].as_array().into_iter().flatten() {
        print_tree(child, indent + 1);
    }
}

pub fn coverage(args: CoverageArgs) -> anyhow::Result<ExitCode> {
    let dir = locate_stage(
        &args.run,
        &[coverage::KIND],
        args.stage.as_deref(),
        "coverage of concepts",
    )?;
    let file = CoverageOutputs::new(&dir).coverage()?.with_context(|| {
        format!(
            "{}: the coverage stage wrote no coverage file",
            dir.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&file)?);
    } else {
        print_coverage(&file);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_coverage(file: &CoverageFile) {
    let names: Vec<String> = file
        .members
        .iter()
        .map(|m| format!("{} ({})", m.name, m.d_sae))
        .collect();
    let occurring = file.concepts.iter().filter(|c| c.occurrences > 0).count();
    println!(
        "{} concepts, {occurring} occurring in {} tokens\n",
        file.concepts.len(),
        file.tokens
    );
    print!("{:<24} {:>9}", "per million tokens", "concepts");
    for name in &names {
        print!(" {name:>18}");
    }
    println!();
    for bin in &file.bins {
        print!(
            "{:<24} {:>9}",
            format!("{:.3} – {:.3}", bin.low, bin.high),
            bin.concepts
        );
        for fraction in &bin.covered_fraction {
            print!(" {:>17.0}%", 100.0 * fraction);
        }
        println!();
    }
    println!();
    print!("{:<24} {:>9}", "category (occurring)", "concepts");
    for name in &names {
        print!(" {name:>18}");
    }
    println!();
    let mut categories: BTreeMap<&str, Vec<&coverage::ConceptCoverage>> = BTreeMap::new();
    for c in file.concepts.iter().filter(|c| c.occurrences > 0) {
        categories.entry(&c.category).or_default().push(c);
    }
    for (category, concepts) in categories {
        print!("{category:<24} {:>9}", concepts.len());
        for m in 0..file.members.len() {
            let covered = concepts.iter().filter(|c| c.best[m].covered).count();
            print!(" {:>18}", format!("{covered}/{}", concepts.len()));
        }
        println!();
    }
    println!("\n{}", file.criterion);
}
