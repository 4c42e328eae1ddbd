//! Real chat templates (SmolLM2, Llama 3/3.2/3.3, Gemma 2/3, Qwen2.5/3, Phi-3.5, Mistral Nemo)
//! rendered by minijinja must give exactly the strings transformers renders:
//! `tests/fixtures/chat/expected.json`, written by `tests/fixtures/chat/make_expected.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use monoscope_formats::{ChatMessage, ChatTemplate, TemplateTokens};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    now_unix: u64,
    conversations: BTreeMap<String, Vec<ChatMessage>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    conversation: String,
    add_generation_prompt: bool,
    bos_token: String,
    eos_token: String,
    expected: Option<String>,
    error: Option<String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
}

#[test]
fn templates_render_as_transformers_does() {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let want: Expected = serde_json::from_str(&text).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(want.now_unix);
    let mut compiled = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &want.cases {
        let template = compiled.entry(case.template.clone()).or_insert_with(|| {
            let path = dir.join(&case.template);
            let source = std::fs::read_to_string(&path).unwrap();
            ChatTemplate::compile(&source, &path).unwrap()
        });
        let messages = &want.conversations[&case.conversation];
        let tokens = TemplateTokens {
            bos_token: case.bos_token.clone(),
            eos_token: case.eos_token.clone(),
        };
        let got = template.render_at(messages, case.add_generation_prompt, &tokens, now);
        let what = format!(
            "{} / {} / add_generation_prompt={}",
            case.template, case.conversation, case.add_generation_prompt
        );
        match (&case.expected, &case.error, got) {
            (Some(want), _, Ok(got)) if *want == got => {}
            (Some(want), _, got) => {
                failures.push(format!("{what}:\n  want {want:?}\n  got  {got:?}"));
            }
            (None, Some(msg), Err(e)) => {
                let e = e.to_string();
                if !e.contains(msg.as_str()) || !e.contains(&case.template) {
                    failures.push(format!("{what}: error {e:?} lacks {msg:?}"));
                }
            }
            (None, msg, got) => {
                failures.push(format!("{what}: want error {msg:?}, got {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from transformers:\n{}",
        failures.len(),
        want.cases.len(),
        failures.join("\n")
    );
    // Every template file is covered.
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jinja"))
        .count();
    assert_eq!(compiled.len(), files);
}

/// The SmolLM2 template inserts its default system message itself: no code of ours does.
#[test]
fn smollm2_default_system_comes_from_the_template() {
    let path = fixtures().join("smollm2.jinja");
    let source = std::fs::read_to_string(&path).unwrap();
    let t = ChatTemplate::compile(&source, &path).unwrap();
    let msgs = [ChatMessage::new("user", "Hi")];
    let got = t.render(&msgs, true, &TemplateTokens::default()).unwrap();
    assert_eq!(
        got,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}
