//! `monoscope stages`: every stage kind with its ports and parameters.

use std::path::PathBuf;
use std::process::ExitCode;

use monoscope_core::StageOrigin;
use serde_json::Value;

pub fn list(json: bool, plugins: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let registry = crate::pipeline_cmds::registry_with_plugins(plugins)?;
    if json {
        let kinds: Vec<Value> = registry
            .kinds()
            .filter_map(|kind| {
                let factory = registry.get(kind)?;
                Some(serde_json::json!({
                    "description": factory.description(),
                    "origin": registry.origin(kind),
                    "schema": factory.schema(),
                    "parts": factory.parts(),
                }))
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&kinds)?);
        return Ok(ExitCode::SUCCESS);
    }
    for kind in registry.kinds() {
        let Some(factory) = registry.get(kind) else {
            continue;
        };
        let description = factory.description();
        let origin = match registry.origin(kind) {
            Some(StageOrigin::Plugin {
                path,
                name,
                version,
            }) => {
                format!("plugin {name} {version}, {}", path.display())
            }
            _ => "built-in".to_string(),
        };
        println!("{kind}  ({origin})\n    {}", description.doc);
        for (label, ports) in [
            ("input", &description.inputs),
            ("output", &description.outputs),
        ] {
            for port in ports {
                let optional = if label == "input" && !port.required {
                    ", optional"
                } else {
                    ""
                };
                println!(
                    "    {label:<6} {:<14} {}{optional}: {}",
                    port.name, port.ty, port.doc
                );
            }
        }
        for param in parameters(&factory.schema()) {
            println!("    param  {param}");
        }
        if let Some(part) = factory.parts() {
            println!("    parts  `parts = N` runs it in N processes; one part is {part}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per parameter: name, type, default, doc, from the config type's JSON Schema.
fn parameters(schema: &Value) -> Vec<String> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(name, p)| {
            let ty = type_name(p, schema);
            let default = match p.get("default") {
                Some(d) => format!(" = {d}"),
                None if required.contains(&name.as_str()) => " (required)".to_string(),
                None => String::new(),
            };
            let doc = p
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            format!("{name:<14} {ty}{default}  {doc}")
        })
        .collect()
}

fn type_name(property: &Value, root: &Value) -> String {
    if let Some(t) = property.get("type") {
        return match t {
            Value::Array(types) => types
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("|"),
            other => other.as_str().unwrap_or("value").to_string(),
        };
    }
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let def = root.pointer(&format!("/$defs/{name}"));
        if let Some(values) = def.and_then(|d| d.get("enum")).and_then(Value::as_array) {
            return values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("|");
        }
        return name.to_string();
    }
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|");
    }
    "value".to_string()
}
