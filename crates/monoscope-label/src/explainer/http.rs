//! The HTTP explainer: any OpenAI-compatible `chat/completions` endpoint (llama.cpp server,
//! vLLM, Ollama, hosted APIs).
//!
//! What happens to each kind of failure:
//! - connection errors, timeouts, HTTP 408, 429 and 5xx, and a body that is not the expected
//!   JSON: retried up to `max_retries` times with exponential backoff (a `Retry-After` header
//!   of at most a minute is honoured); then the feature is skipped with the last error as
//!   its reason;
//! - other HTTP errors (400, 401, 404, ...): not retried, the feature is skipped;
//! - an empty answer, or one that does not parse: the feature is skipped with that reason;
//!   for a yes/no question, an answer that is neither counts as `no`.
//!
//! The API key is read from the environment variable named in the settings at start-up and
//! only ever sent in the `Authorization` header. Successful answers are cached, so labels
//! already obtained survive any later failure and a rerun sends nothing.

use std::time::Duration;

use monoscope_formats::ChatMessage;
use serde::{Deserialize, Serialize};

use super::{Explainer, Explanation, ResponseCache, Usage, UsageCounter};
use crate::LabelError;
use crate::format::FeatureEvidence;
use crate::prompt::{self, JudgeTask, Shown};

/// Connection settings of an [`HttpExplainer`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Base URL (`http://127.0.0.1:8080/v1`) or the full `.../chat/completions` URL.
    pub url: String,
    pub model: String,
    /// The API key itself (read from the environment by the caller), if any.
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    /// The first retry waits this long; each next one twice as long.
    pub backoff: Duration,
    /// Answer length limit of an explanation.
    pub max_tokens: usize,
}

#[derive(Debug)]
pub struct HttpExplainer {
    settings: HttpSettings,
    endpoint: String,
    agent: ureq::Agent,
    cache: ResponseCache,
    usage: UsageCounter,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedText {
    text: String,
}

/// Why one attempt failed, and whether another may succeed.
enum Attempt {
    Retry(String, Option<Duration>),
    Fail(String),
}

impl HttpExplainer {
    pub fn new(settings: HttpSettings, cache: ResponseCache) -> Self {
        let endpoint = if settings
            .url
            .trim_end_matches('/')
            .ends_with("/chat/completions")
        {
            settings.url.clone()
        } else {
            format!("{}/chat/completions", settings.url.trim_end_matches('/'))
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        HttpExplainer {
            settings,
            endpoint,
            agent,
            cache,
            usage: UsageCounter::default(),
        }
    }

    /// The assistant's text for `messages`, from the cache or the endpoint.
    pub fn complete(
        &self,
        messages: &[ChatMessage],
        max_tokens: usize,
    ) -> Result<String, LabelError> {
        let body = serde_json::json!({
            "model": self.settings.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        });
        let body = body.to_string();
        let key = ResponseCache::key(&["http", &self.endpoint, &self.settings.model, &body]);
        if let Some(hit) = self.cache.get::<CachedText>(&key) {
            self.usage.hit();
            return Ok(hit.text);
        }
        let mut attempt = 0;
        loop {
            match self.attempt(&body) {
                Ok(text) => {
                    if text.trim().is_empty() {
                        return Err(LabelError::Answer(
                            "the endpoint returned an empty answer".into(),
                        ));
                    }
                    self.cache.put(&key, &CachedText { text: text.clone() });
                    return Ok(text);
                }
                Err(Attempt::Fail(message)) => return Err(self.error(message)),
                Err(Attempt::Retry(message, wait)) => {
                    if attempt >= self.settings.max_retries {
                        return Err(self.error(format!(
                            "{message} (gave up after {} attempts)",
                            attempt + 1
                        )));
                    }
                    let backoff = self.settings.backoff * 2u32.saturating_pow(attempt);
                    let wait = wait
                        .filter(|w| *w <= Duration::from_secs(60))
                        .unwrap_or(backoff);
                    tracing::debug!("{}: {message}; retrying in {wait:?}", self.endpoint);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    fn error(&self, message: String) -> LabelError {
        LabelError::Http {
            url: self.endpoint.clone(),
            message,
        }
    }

    fn attempt(&self, body: &str) -> Result<String, Attempt> {
        let mut request = self
            .agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.settings.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(t)) => {
                return Err(Attempt::Retry(format!("timed out ({t})"), None));
            }
            Err(e) => return Err(Attempt::Retry(e.to_string(), None)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = match response.body_mut().read_to_string() {
            Ok(t) => t,
            Err(ureq::Error::Timeout(t)) => {
                return Err(Attempt::Retry(
                    format!("timed out reading the answer ({t})"),
                    None,
                ));
            }
            Err(e) => return Err(Attempt::Retry(format!("reading the answer: {e}"), None)),
        };
        let (content, usage) = read_reply(status, retry_after.as_deref(), &text)?;
        self.usage.add(usage.tokens_in, usage.tokens_out);
        Ok(content)
    }

    /// What one reply of the endpoint says: the assistant's text and the tokens the reply
    /// reports, from its HTTP `status`, `Retry-After` header and `body`; or the error this
    /// explainer gives for it, which names the endpoint. Nothing is sent: this is the parsing
    /// every reply to [`HttpExplainer::complete`] goes through, for tests to feed any reply.
    pub fn parse_reply(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &str,
    ) -> Result<(String, Usage), LabelError> {
        read_reply(status, retry_after, body).map_err(|e| match e {
            Attempt::Retry(message, _) | Attempt::Fail(message) => self.error(message),
        })
    }
}

/// The assistant's text and reported usage in a reply, or why the reply is unusable and
/// whether asking again may help.
fn read_reply(
    status: u16,
    retry_after: Option<&str>,
    text: &str,
) -> Result<(String, Usage), Attempt> {
    if !(200..300).contains(&status) {
        let message = format!("HTTP {status}: {}", excerpt(text));
        let wait = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(match status {
            408 | 429 | 500..=599 => Attempt::Retry(message, wait),
            _ => Attempt::Fail(message),
        });
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Attempt::Retry(format!("malformed JSON ({e}): {}", excerpt(text)), None))?;
    let content = value
        .pointer("/choices/0/message/content")
        .and_then(|c| c.as_str())
        .ok_or_else(|| {
            Attempt::Retry(
                format!("no choices[0].message.content in {}", excerpt(text)),
                None,
            )
        })?;
    let count = |p: &str| value.pointer(p).and_then(|v| v.as_u64()).unwrap_or(0);
    let usage = Usage {
        tokens_in: count("/usage/prompt_tokens"),
        tokens_out: count("/usage/completion_tokens"),
        cache_hits: 0,
    };
    Ok((content.to_string(), usage))
}

fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t.replace('\n', " ")
}

impl Explainer for HttpExplainer {
    fn describe(&self) -> String {
        format!("http:{}@{}", self.settings.model, self.endpoint)
    }

    fn explain(
        &self,
        evidence: &FeatureEvidence,
        examples: usize,
    ) -> Result<Explanation, LabelError> {
        let answer = self.complete(
            &prompt::explain_messages(evidence, examples),
            self.settings.max_tokens,
        )?;
        prompt::parse_explanation(&answer)
    }

    fn judge(
        &self,
        task: JudgeTask,
        explanation: &Explanation,
        shown: &[Shown],
    ) -> Result<Vec<bool>, LabelError> {
        shown
            .iter()
            .map(|s| {
                let messages = prompt::judge_messages(
                    task,
                    &explanation.label,
                    Some(&explanation.explanation),
                    s,
                );
                Ok(prompt::parse_yes_no(&self.complete(&messages, 3)?).unwrap_or(false))
            })
            .collect()
    }

    fn usage(&self) -> Usage {
        self.usage.snapshot()
    }
}
