//! Connecting stages: resolving `input`/`inputs`, checking port types, ordering, cycles.

use std::collections::{BTreeMap, BTreeSet};

use figment::value::Value;
use monoscope_core::closest_name;

use crate::problems::{Problem, show};
use crate::spec::{Endpoint, StageSpec};

/// The raw `input` and `inputs` values of each stage table.
pub(crate) type RawInputs = BTreeMap<String, (Option<Value>, Option<Value>)>;

/// Fills each stage's `inputs`, reporting every problem, and returns the indices of `stages` in
/// dependency order (empty when there is a cycle or any other problem).
pub(crate) fn connect(
    stages: &mut [StageSpec],
    raw: &RawInputs,
    all_ids: &BTreeSet<String>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Vec<usize> {
    let index: BTreeMap<String, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut resolved = Vec::new();
    for stage in stages.iter() {
        let (input, inputs) = raw.get(&stage.id).cloned().unwrap_or_default();
        let mut connections = BTreeMap::new();
        for (port, key, value) in requested(stage, input, inputs, at, problems) {
            let Value::String(_, target) = &value else {
                problems.push(problem(
                    at,
                    &key,
                    format!(
                        "= {}: expected a string `stage` or `stage.port`",
                        show(&value)
                    ),
                ));
                continue;
            };
            let Some(spec) = stage.description.input(&port) else {
                let names: Vec<&str> = stage
                    .description
                    .inputs
                    .iter()
                    .map(|p| p.name.as_ref())
                    .collect();
                let hint = closest_name(&port, names.iter().copied())
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                problems.push(problem(
                    at,
                    &key,
                    format!(
                        "unknown input port `{port}` of a {} stage{hint} (its inputs: {})",
                        stage.kind,
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
                continue;
            };
            let (up_id, up_port) = match target.split_once('.') {
                Some((s, p)) => (s.to_string(), Some(p.to_string())),
                None => (target.clone(), None),
            };
            let Some(&up) = index.get(&up_id) else {
                if !all_ids.contains(&up_id) {
                    let hint = closest_name(&up_id, all_ids.iter().map(String::as_str))
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    problems.push(problem(
                        at,
                        &key,
                        format!("= \"{target}\": no stage with id `{up_id}`{hint}"),
                    ));
                }
                // An upstream that exists but failed validation has been reported already.
                continue;
            };
            let upstream = &stages[up];
            let outputs = &upstream.description.outputs;
            let matching: Vec<&str> = outputs
                .iter()
                .filter(|o| o.ty == spec.ty)
                .map(|o| o.name.as_ref())
                .collect();
            let chosen = match &up_port {
                Some(p) => match outputs.iter().find(|o| o.name == p.as_str()) {
                    None => {
                        problems.push(problem(at, &key, format!(
                            "= \"{target}\": stage `{up_id}` ({}) has no output `{p}` (its outputs: {})",
                            upstream.kind, list_ports(outputs)
                        )));
                        continue;
                    }
                    Some(o) if o.ty != spec.ty => {
                        problems.push(problem(at, &key, format!(
                            "= \"{target}\": output `{p}` of stage `{up_id}` carries {}, but input `{port}` of a {} stage needs {}",
                            o.ty, stage.kind, spec.ty
                        )));
                        continue;
                    }
                    Some(o) => o.name.to_string(),
                },
                None => match matching.as_slice() {
                    [one] => one.to_string(),
                    [] => {
                        problems.push(problem(at, &key, format!(
                            "= \"{target}\": stage `{up_id}` ({}) has no output of the type input `{port}` of a {} stage needs ({}); its outputs: {}",
                            upstream.kind, stage.kind, spec.ty, list_ports(outputs)
                        )));
                        continue;
                    }
                    several => {
                        problems.push(problem(at, &key, format!(
                            "= \"{target}\": stage `{up_id}` has several outputs of type {} ({}); name one as `{up_id}.<port>`",
                            spec.ty, several.join(", ")
                        )));
                        continue;
                    }
                },
            };
            if up_id == stage.id {
                problems.push(problem(
                    at,
                    &key,
                    format!("= \"{target}\": a stage cannot read its own output"),
                ));
                continue;
            }
            connections.insert(
                port,
                Endpoint {
                    stage: up_id,
                    port: chosen,
                },
            );
        }
        for spec in &stage.description.inputs {
            if spec.required
                && !connections.contains_key(spec.name.as_ref())
                && !mentions(raw, &stage.id, &spec.name)
            {
                problems.push(problem(at, &format!("{}.inputs.{}", stage.id, spec.name), format!(
                    "missing input: a {} stage needs `{}` ({}); set `input = \"<stage>\"` or `inputs = {{ {} = \"<stage>.<port>\" }}`",
                    stage.kind, spec.name, spec.ty, spec.name
                )));
            }
        }
        resolved.push(connections);
    }
    for (stage, connections) in stages.iter_mut().zip(resolved) {
        stage.inputs = connections;
    }
    if !problems.is_empty() {
        return Vec::new();
    }
    order(stages, &index, at, problems)
}

/// `(port, key for messages, target value)` for each connection a stage table asks for.
fn requested(
    stage: &StageSpec,
    input: Option<Value>,
    inputs: Option<Value>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Vec<(String, String, Value)> {
    let id = &stage.id;
    match (input, inputs) {
        (Some(_), Some(_)) => {
            problems.push(problem(
                at,
                &format!("{id}.input"),
                "set either `input` or `inputs`, not both".to_string(),
            ));
            Vec::new()
        }
        (Some(value), None) => {
            // `input` names the only input, or the only required one.
            let ports = &stage.description.inputs;
            let required: Vec<_> = ports.iter().filter(|p| p.required).collect();
            let target = match (ports.as_slice(), required.as_slice()) {
                ([only], _) => Some(only),
                (_, [only]) => Some(*only),
                _ => None,
            };
            match target {
                Some(port) => vec![(port.name.to_string(), format!("{id}.input"), value)],
                None => {
                    problems.push(problem(at, &format!("{id}.input"), format!(
                        "a {} stage has {} inputs ({}): use `inputs = {{ port = \"stage.port\" }}`",
                        stage.kind,
                        ports.len(),
                        list_ports(ports)
                    )));
                    Vec::new()
                }
            }
        }
        (None, Some(Value::Dict(_, dict))) => dict
            .into_iter()
            .map(|(port, value)| (port.clone(), format!("{id}.inputs.{port}"), value))
            .collect(),
        (None, Some(other)) => {
            problems.push(problem(
                at,
                &format!("{id}.inputs"),
                format!(
                    "= {}: expected a table such as `{{ activations = \"capture.activations\" }}`",
                    show(&other)
                ),
            ));
            Vec::new()
        }
        (None, None) => Vec::new(),
    }
}

/// Whether the table named this port at all (then its problem was reported already).
fn mentions(raw: &RawInputs, id: &str, port: &str) -> bool {
    match raw.get(id) {
        Some((Some(_), _)) => true,
        Some((None, Some(Value::Dict(_, dict)))) => dict.contains_key(port),
        _ => false,
    }
}

fn list_ports(ports: &[monoscope_core::PortSpec]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    ports
        .iter()
        .map(|p| format!("`{}` ({})", p.name, p.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

fn problem(at: &dyn Fn(&str) -> String, key: &str, message: String) -> Problem {
    Problem {
        source: at(key),
        key: Some(key.to_string()),
        message,
    }
}

/// Kahn's algorithm; ties broken by id so the order is stable. Reports one cycle if any.
fn order(
    stages: &[StageSpec],
    index: &BTreeMap<String, usize>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Vec<usize> {
    let mut indegree: Vec<usize> = stages.iter().map(|s| s.inputs.len()).collect();
    let mut ready: BTreeSet<(String, usize)> = stages
        .iter()
        .enumerate()
        .filter(|(i, _)| indegree[*i] == 0)
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut out = Vec::new();
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        out.push(i);
        for (j, s) in stages.iter().enumerate() {
            for from in s.inputs.values() {
                if from.stage == stages[i].id {
                    indegree[j] -= 1;
                    if indegree[j] == 0 {
                        ready.insert((s.id.clone(), j));
                    }
                }
            }
        }
    }
    if out.len() == stages.len() {
        return out;
    }
    // Walk upstream from any unfinished stage until a stage repeats: that loop is a cycle.
    let done: BTreeSet<usize> = out.iter().copied().collect();
    let start = (0..stages.len()).find(|i| !done.contains(i)).unwrap_or(0);
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = stages[current]
            .inputs
            .values()
            .filter_map(|e| index.get(&e.stage).copied())
            .find(|j| !done.contains(j))
            .unwrap_or(start);
        if let Some(pos) = path.iter().position(|&p| p == next) {
            // `path` walks upstream (each stage reads from the next one); data flows the other way.
            let mut cycle = vec![stages[next].id.as_str()];
            cycle.extend(path[pos..].iter().rev().map(|&p| stages[p].id.as_str()));
            let first = cycle[0].to_string();
            problems.push(problem(
                at,
                &first,
                format!("stages form a cycle: {}", cycle.join(" → ")),
            ));
            return Vec::new();
        }
        path.push(next);
        current = next;
    }
}

/// A stream only flows between stages of one process: refuses a stream connection into or out
/// of a stage run in parts, and any stream connection under a backend that runs each stage as
/// its own job.
pub(crate) fn check_process_boundaries(
    stages: &[StageSpec],
    backend: crate::scale::Backend,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) {
    let parts: BTreeMap<&str, usize> = stages.iter().map(|s| (s.id.as_str(), s.parts)).collect();
    for stage in stages {
        for (port, from) in &stage.inputs {
            let is_stream = stage
                .description
                .input(port)
                .is_some_and(|spec| matches!(spec.ty, monoscope_core::PortType::Stream(_)));
            if !is_stream {
                continue;
            }
            let key = format!("{}.inputs.{port}", stage.id);
            let why = if backend == crate::scale::Backend::Slurm {
                Some("under backend = \"slurm\" every stage is a job of its own".to_string())
            } else if stage.parts > 1 {
                Some(format!("`{}` runs in {} parts", stage.id, stage.parts))
            } else if parts.get(from.stage.as_str()).is_some_and(|&n| n > 1) {
                Some(format!(
                    "`{}` runs in {} parts",
                    from.stage,
                    parts[from.stage.as_str()]
                ))
            } else {
                None
            };
            if let Some(why) = why {
                problems.push(problem(
                    at,
                    &key,
                    format!(
                        "= \"{from}\": a stream flows only within one process, and {why}; \
                         connect a stored artifact of `{}` instead (a capture's \
                         activations: its `store`)",
                        from.stage
                    ),
                ));
            }
        }
    }
}
