//! `hooks = [...]`: one SAE per hook, each trained as a `hook = ...` stage would train it, in
//! `hooks/<hook>/` of the stage directory. With `parts = N`, part `i` trains a contiguous share
//! of the hooks in its own directory, and the merge links each hook's directory into the
//! stage's, so that the stage's files are those of a run in one piece.

use std::path::Path;

use monoscope_core::{Artifact, OutputPort, StageContext, StageError, Work, part_dir, port_names};

use crate::config::TrainStageConfig;
use crate::error::TrainStageError;

/// Trains this run's share of `config.hooks`, or merges the parts; announces the first hook's
/// SAE, with every hook's SAE directory in its metadata.
pub(crate) fn run(config: &TrainStageConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
    if let Work::Merge { parts } = &ctx.work {
        let parts = parts.clone();
        return merge(config, &parts, ctx);
    }
    let share = match ctx.work.part() {
        Some((index, count)) => Work::share(index, count, config.hooks.len()),
        None => 0..config.hooks.len(),
    };
    if share.is_empty() {
        return Err(TrainStageError::Invalid(format!(
            "this part has no hook to train: `parts` must not exceed the {} hooks of `hooks`",
            config.hooks.len()
        ))
        .into());
    }
    if ctx.has_input(port_names::ACTIVATIONS) {
        return Err(TrainStageError::Invalid(
            "`hooks` trains from a store, one hook at a time: connect `store`, not `activations`"
                .into(),
        )
        .into());
    }
    let model_path = ctx.optional_artifact(port_names::MODEL)?.map(|a| a.path);
    let store_path = ctx.recv_artifact(port_names::STORE)?.path;
    let mut announced = Vec::new();
    for hook in &config.hooks[share] {
        let dir = ctx
            .stage_dir
            .join(monoscope_artifacts::train::HOOKS_DIR)
            .join(hook);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
        let mut one = config.clone();
        one.hook = Some(hook.clone());
        one.hooks.clear();
        // Each hook's SAE is announced to this stage, not downstream: the stage announces
        // the first hook's once all are trained.
        let mut inner = StageContext::new(
            ctx.stage_id,
            ctx.run_dir,
            dir,
            ctx.seed,
            ctx.cancel.clone(),
            ctx.progress.clone(),
            Vec::new(),
            vec![OutputPort::new(
                port_names::SAE,
                Vec::new(),
                ctx.cancel.clone(),
            )],
        );
        crate::stage::train(&store_path, model_path.clone(), &one, &mut inner)?;
        announced.extend(
            inner
                .emitted()
                .iter()
                .map(|(_, a)| (hook.clone(), a.clone())),
        );
    }
    if ctx.work.part().is_some() {
        // A part announces every SAE it trained, for the merge (nothing downstream reads it).
        for (_, sae) in announced {
            ctx.emit_artifact(port_names::SAE, sae)?;
        }
        return Ok(());
    }
    announce(announced, ctx)
}

/// Announces the first hook's SAE, with each hook's SAE directory in its metadata.
fn announce(saes: Vec<(String, Artifact)>, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
    let all: serde_json::Map<String, serde_json::Value> = saes
        .iter()
        .map(|(hook, a)| (hook.clone(), a.path.display().to_string().into()))
        .collect();
    let Some((_, first)) = saes.into_iter().next() else {
        return Err(TrainStageError::Invalid("no hook was trained".into()).into());
    };
    let mut metadata = first.metadata.clone();
    metadata["saes"] = serde_json::Value::Object(all);
    ctx.emit_artifact(port_names::SAE, Artifact { metadata, ..first })
}

/// Links each part's hook directories into the stage's and announces as a whole run would.
fn merge(
    config: &TrainStageConfig,
    parts: &[Vec<(String, Artifact)>],
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let hooks_dir = ctx.stage_dir.join(monoscope_artifacts::train::HOOKS_DIR);
    let mut announced = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let from_dir = part_dir(&ctx.stage_dir, index).join(monoscope_artifacts::train::HOOKS_DIR);
        let hooks = &config.hooks[Work::share(index, parts.len(), config.hooks.len())];
        let saes: Vec<&Artifact> = part
            .iter()
            .filter(|(p, _)| p == port_names::SAE)
            .map(|(_, a)| a)
            .collect();
        if saes.len() != hooks.len() {
            return Err(TrainStageError::Invalid(format!(
                "part {index} announced {} SAEs for its {} hooks",
                saes.len(),
                hooks.len()
            ))
            .into());
        }
        for (hook, sae) in hooks.iter().zip(saes) {
            let to = hooks_dir.join(hook);
            link_tree(&from_dir.join(hook), &to)?;
            let path = monoscope_artifacts::train::TrainOutputs::new(&to).sae_dir();
            announced.push((
                hook.clone(),
                Artifact {
                    path,
                    ..sae.clone()
                },
            ));
        }
    }
    announce(announced, ctx)
}

/// `to` becomes a copy of the tree `from`, its files hard links where the file system allows
/// (a merge is then instant and takes no space). An earlier, interrupted merge's `to` is
/// replaced.
fn link_tree(from: &Path, to: &Path) -> Result<(), StageError> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| StageError::io(to, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| StageError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| StageError::io(from, e))? {
        let entry = entry.map_err(|e| StageError::io(from, e))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry
            .file_type()
            .map_err(|e| StageError::io(&source, e))?
            .is_dir()
        {
            link_tree(&source, &target)?;
        } else if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(|e| StageError::io(&source, e))?;
        }
    }
    Ok(())
}
