//! The HTTP explainer against a local OpenAI-compatible server started by the test (bound to
//! 127.0.0.1), which checks each request's shape and plays back canned answers and failures.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monoscope_label::LabelError;
use monoscope_label::explainer::{Explainer, HttpExplainer, HttpSettings, ResponseCache};
use monoscope_label::format::{
    Context, FeatureEvidence, Histogram, LogitEffects, QuantileSamples, Scores,
};
use monoscope_label::labelling::{LabelOptions, label_feature, label_features};
use serde_json::Value;

/// What the server answers to one request.
#[derive(Clone, Debug)]
enum Reply {
    Answer(&'static str),
    Status(u16, &'static str),
    Raw(&'static str),
    Sleep(Duration),
}

struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

struct Server {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// Serves until the test ends; `reply` chooses the answer from the request body and how many
/// requests came before.
fn serve(reply: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
    let seen = requests.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                assert!(line.starts_with("POST "), "{line}");
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("a Content-Length header");
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).expect("a JSON body");
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Request {
                        path,
                        headers,
                        body: body.clone(),
                    });
                    seen.len() - 1
                };
                let (status, text) = match reply(&body, n) {
                    Reply::Answer(a) => (
                        200,
                        serde_json::json!({
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": a}}],
                            "usage": {"prompt_tokens": 100, "completion_tokens": 10}
                        })
                        .to_string(),
                    ),
                    Reply::Status(s, t) => (s, t.to_string()),
                    Reply::Raw(t) => (200, t.to_string()),
                    Reply::Sleep(d) => {
                        std::thread::sleep(d);
                        (200, String::new())
                    }
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    Server { url, requests }
}

fn settings(url: &str) -> HttpSettings {
    HttpSettings {
        url: url.to_string(),
        model: "test-model".into(),
        api_key: Some("sk-test".into()),
        timeout: Duration::from_millis(500),
        max_retries: 2,
        backoff: Duration::from_millis(10),
        max_tokens: 50,
    }
}

fn context(row: u64, word: &str, fires: bool) -> Context {
    Context {
        row,
        doc: 0,
        position: row as u32,
        tokens: vec!["the".into(), format!(" {word}"), " is".into()],
        activations: vec![0.0, if fires { 2.0 } else { 0.0 }, 0.0],
        focus: 1,
    }
}

/// A live feature whose top contexts all fire on `word`.
fn feature(id: u32, word: &str) -> FeatureEvidence {
    FeatureEvidence {
        feature: id,
        fires: 10,
        frequency: 0.1,
        max_activation: 2.0,
        mean_activation: 1.0,
        histogram: Histogram::default(),
        top: (0..3).map(|r| context(r, word, true)).collect(),
        quantiles: vec![QuantileSamples {
            low: 0.0,
            high: 2.0,
            examples: (10..13).map(|r| context(r, word, true)).collect(),
        }],
        random: (20..23).map(|r| context(r, "other", false)).collect(),
        logits: LogitEffects::default(),
    }
}

fn user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn no_cache() -> ResponseCache {
    ResponseCache::new(None)
}

#[test]
fn request_has_the_openai_shape_and_the_answer_becomes_a_label() {
    let server = serve(|_, _| Reply::Answer("Label: bridges\nExplanation: Names of bridges."));
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let explanation = explainer.explain(&feature(1, "Golden"), 2).unwrap();
    assert_eq!(explanation.label, "bridges");
    assert_eq!(explanation.explanation, "Names of bridges.");
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, "/v1/chat/completions");
    let header = |k: &str| {
        r.headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("Bearer sk-test"));
    assert!(
        header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.body["model"], "test-model");
    assert_eq!(r.body["max_tokens"], 50);
    assert_eq!(r.body["temperature"], 0.0);
    let messages = r.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    for m in messages {
        assert!(["system", "user", "assistant"].contains(&m["role"].as_str().unwrap()));
        assert!(m["content"].is_string());
    }
    let user = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(user.contains("1. the <<Golden>> is"), "{user}");
    assert!(
        !user.contains("3. "),
        "only 2 examples were asked for: {user}"
    );
    let usage = explainer.usage();
    assert_eq!((usage.tokens_in, usage.tokens_out), (100, 10));
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let server = serve(|_, n| match n {
        0 => Reply::Status(429, "{\"error\": \"slow down\"}"),
        1 => Reply::Status(500, "oops"),
        _ => Reply::Answer("Label: ok"),
    });
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let explanation = explainer.explain(&feature(1, "x"), 3).unwrap();
    assert_eq!(explanation.label, "ok");
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn a_timeout_is_retried() {
    let server = serve(|_, n| match n {
        0 => Reply::Sleep(Duration::from_millis(1500)),
        _ => Reply::Answer("Label: after a timeout"),
    });
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let explanation = explainer.explain(&feature(1, "x"), 3).unwrap();
    assert_eq!(explanation.label, "after a timeout");
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}

#[test]
fn malformed_json_is_retried_then_reported() {
    let server = serve(|_, _| Reply::Raw("{\"choices\": [ this is not json"));
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let err = explainer.explain(&feature(1, "x"), 3).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LabelError::Http { .. }), "{msg}");
    assert!(
        msg.contains("malformed JSON") && msg.contains("gave up after 3 attempts"),
        "{msg}"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn an_empty_answer_and_a_client_error_are_not_retried() {
    let server = serve(|_, _| Reply::Answer("   "));
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let err = explainer.explain(&feature(1, "x"), 3).unwrap_err();
    assert!(matches!(err, LabelError::Answer(_)), "{err}");
    assert_eq!(server.requests.lock().unwrap().len(), 1);

    let server = serve(|_, _| Reply::Status(401, "{\"error\": \"bad key\"}"));
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let err = explainer.explain(&feature(1, "x"), 3).unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[test]
fn nothing_listening_is_an_error_not_a_crash() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let explainer =
        HttpExplainer::new(settings(&format!("http://127.0.0.1:{port}/v1")), no_cache());
    let err = explainer.explain(&feature(1, "x"), 3).unwrap_err();
    assert!(matches!(err, LabelError::Http { .. }), "{err}");
}

/// Answers as a sensible explainer and judge for features whose examples name an animal, and
/// fails for the one about `volcano`.
fn judge_server(fail_volcano: bool) -> Server {
    serve(move |body, _| {
        let text = user_text(body);
        if fail_volcano && text.contains("volcano") {
            return Reply::Status(503, "overloaded");
        }
        if text.starts_with("Examples:") || text.contains("\n1. ") {
            let word = ["cat", "dog", "volcano"]
                .into_iter()
                .find(|w| text.contains(w))
                .unwrap_or("thing");
            return Reply::Answer(match word {
                "cat" => "Label: cat\nExplanation: The word cat.",
                "dog" => "Label: dog\nExplanation: The word dog.",
                _ => "Label: volcano\nExplanation: The word volcano.",
            });
        }
        // A judge question: yes when the text holds the label's word, on the marks for fuzzing.
        let label = text.lines().next().unwrap().trim_start_matches("Feature: ");
        let word = label.split('.').next().unwrap().trim().to_string();
        let shown = text
            .lines()
            .find(|l| l.starts_with("Text: "))
            .unwrap_or_default();
        let yes = if text.contains("marked") {
            shown.contains(&format!("<<{word}>>"))
        } else {
            shown.contains(&word)
        };
        Reply::Answer(if yes { "Yes" } else { "No." })
    })
}

#[test]
fn labelling_skips_failed_features_and_keeps_labels_already_obtained() {
    let cache_dir = tempfile::tempdir().unwrap();
    let features = [feature(0, "cat"), feature(1, "volcano"), feature(2, "dog")];
    let refs: Vec<&FeatureEvidence> = features.iter().collect();
    let options = LabelOptions {
        explain_examples: 3,
        score: true,
        score_examples: 3,
        baseline: true,
        concurrency: 3,
        batch: 2,
        seed: 0,
    };
    let server = judge_server(true);
    let explainer = HttpExplainer::new(
        settings(&server.url),
        ResponseCache::new(Some(cache_dir.path().into())),
    );
    let out = label_features(&explainer, &refs, &options, &|_| {}, &|| false).unwrap();
    let labelled: Vec<(u32, &str)> = out
        .records
        .iter()
        .map(|r| (r.feature, r.label.as_str()))
        .collect();
    assert_eq!(labelled, [(0, "cat"), (2, "dog")]);
    assert_eq!(out.skipped.values().sum::<usize>(), 1);
    let reason = out.skipped.keys().next().unwrap();
    assert!(reason.contains("HTTP 503"), "{reason}");
    for r in &out.records {
        assert_eq!(r.scores.detection, Some(1.0), "{r:?}");
        assert_eq!(r.scores.fuzzing, Some(1.0), "{r:?}");
        assert!(r.explainer.starts_with("http:test-model@http://127.0.0.1:"));
        assert!(!r.explainer.contains("sk-test"));
        let baseline = r.baseline.as_ref().expect("a statistical baseline");
        assert_eq!(
            baseline.label, r.label,
            "the statistical label of a one-word feature is that word"
        );
    }
    // A rerun (the volcano feature still failing) costs only the failed feature's requests
    // and keeps every label already obtained.
    let asked_before = server.requests.lock().unwrap().len();
    let explainer = HttpExplainer::new(
        settings(&server.url),
        ResponseCache::new(Some(cache_dir.path().into())),
    );
    let again = label_features(&explainer, &refs, &options, &|_| {}, &|| false).unwrap();
    assert_eq!(again.records, out.records);
    let asked_after = server.requests.lock().unwrap().len();
    // Only the failed feature's requests were sent again.
    let new: Vec<String> = server.requests.lock().unwrap()[asked_before..asked_after]
        .iter()
        .map(|r| user_text(&r.body))
        .collect();
    assert!(
        !new.is_empty() && new.iter().all(|t| t.contains("volcano")),
        "{new:?}"
    );
    assert!(explainer.usage().cache_hits > 0);
}

#[test]
fn a_label_survives_failed_scoring() {
    let server = serve(|body, _| match user_text(body).starts_with("Examples:") {
        true => Reply::Answer("Label: cat\nExplanation: The word cat."),
        false => Reply::Status(500, "judge down"),
    });
    let explainer = HttpExplainer::new(settings(&server.url), no_cache());
    let options = LabelOptions {
        explain_examples: 3,
        score: true,
        score_examples: 2,
        baseline: false,
        concurrency: 1,
        batch: 1,
        seed: 0,
    };
    let record = label_feature(&explainer, &feature(0, "cat"), &options).unwrap();
    assert_eq!(record.label, "cat");
    assert_eq!(record.scores, Scores::default());
}
