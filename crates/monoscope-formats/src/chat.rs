//! Chat templates. Real templates are Jinja programs; rather than embed a Jinja engine we
//! recognise the few families our models use and render them natively.

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A recognised chat-template family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` (SmolLM2, Qwen2). `default_system` is the
    /// system turn the template inserts when the conversation has none (SmolLM2's "You are a
    /// helpful AI assistant named SmolLM..."), read out of the template's literal text.
    ChatMl { default_system: Option<String> },
    /// `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>` after
    /// `<|begin_of_text|>` (Llama 3).
    Llama3,
    /// No or unrecognised template: each message becomes `{role}: {content}\n`, and the
    /// generation prompt is `assistant: `. Never fails, but an instruction-tuned model will
    /// follow it less well than its own format.
    Plain,
}

impl ChatTemplate {
    /// Recognise the family of a Jinja chat template (`tokenizer.chat_template` in GGUF,
    /// `chat_template` in `tokenizer_config.json`).
    pub fn detect(template: Option<&str>) -> Self {
        let Some(t) = template else {
            return Self::Plain;
        };
        if t.contains("<|im_start|>") {
            Self::ChatMl {
                default_system: chatml_default_system(t),
            }
        } else if t.contains("<|start_header_id|>") {
            Self::Llama3
        } else {
            Self::Plain
        }
    }

    /// Render `messages`; with `add_generation_prompt`, end with the opening of an assistant
    /// turn so that generation continues as the assistant.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            Self::ChatMl { default_system } => {
                let has_system = messages.first().is_some_and(|m| m.role == "system");
                if let (false, Some(sys)) = (has_system, default_system) {
                    out += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
                }
                for m in messages {
                    out += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    out += "<|im_start|>assistant\n";
                }
            }
            Self::Llama3 => {
                out += "<|begin_of_text|>";
                for m in messages {
                    out += &format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    );
                }
                if add_generation_prompt {
                    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
                }
            }
            Self::Plain => {
                for m in messages {
                    out += &format!("{}: {}\n", m.role, m.content);
                }
                if add_generation_prompt {
                    out += "assistant: ";
                }
            }
        }
        out
    }
}

/// The literal system prompt a ChatML template inserts by default: text between
/// `<|im_start|>system` + newline and `<|im_end|>` that contains no Jinja expression.
fn chatml_default_system(t: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system";
    let mut rest = t;
    while let Some(i) = rest.find(OPEN) {
        rest = &rest[i + OPEN.len()..];
        // The newline is either real (JSON-unescaped) or a Jinja string escape `\n`.
        let body = rest.strip_prefix('\n').or_else(|| rest.strip_prefix("\\n"));
        let Some(body) = body else { continue };
        let Some(end) = body.find("<|im_end|>") else {
            continue;
        };
        let text = &body[..end];
        let literal = !text.is_empty() && !text.contains(['\'', '"', '{', '}', '+']);
        if literal {
            return Some(text.replace("\\n", "\n"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_families() {
        assert_eq!(ChatTemplate::detect(None), ChatTemplate::Plain);
        assert_eq!(
            ChatTemplate::detect(Some("{{ messages }}")),
            ChatTemplate::Plain
        );
        assert_eq!(
            ChatTemplate::detect(Some("{{'<|im_start|>' + m['role']}}")),
            ChatTemplate::ChatMl {
                default_system: None
            }
        );
        assert_eq!(
            ChatTemplate::detect(Some("<|start_header_id|>{{ m['role'] }}<|end_header_id|>")),
            ChatTemplate::Llama3
        );
    }

    #[test]
    fn reads_default_system_with_either_newline_spelling() {
        let real = "{% if x %}{{ '<|im_start|>system\nBe kind.<|im_end|>\n' }}{% endif %}";
        let escaped =
            r"{{- '<|im_start|>system\n' }}{{- '<|im_start|>system\nBe kind.<|im_end|>\n' }}";
        for t in [real, escaped] {
            assert_eq!(
                ChatTemplate::detect(Some(t)),
                ChatTemplate::ChatMl {
                    default_system: Some("Be kind.".into())
                },
                "{t}"
            );
        }
    }

    #[test]
    fn renders_llama3_and_plain() {
        let m = [ChatMessage::new("user", " hi ")];
        assert_eq!(
            ChatTemplate::Llama3.render(&m, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            ChatTemplate::Plain.render(&m, true),
            "user:  hi \nassistant: "
        );
    }
}
