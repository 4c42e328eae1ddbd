//! Fuzzing what the explainers parse: a model's answers (`parse_explanation`, `parse_yes_no`)
//! as arbitrary text, Unicode whose lowercase has another byte length included, and an HTTP
//! endpoint's replies (`HttpExplainer::parse_reply`, which every reply goes through) as any
//! status, `Retry-After` and body: edits of a valid chat-completions reply, arbitrary text, and
//! deeply nested JSON. Property: no panic and no abort; a reply's error names the endpoint;
//! a parsed explanation keeps to its limits; and no single allocation exceeds
//! `ALLOCATION_BOUND`.
//!
//! Cases per target: `MONOSCOPE_FUZZ_CASES`, by default
//! `monoscope_formats::testing::fuzz::DEFAULT_CASES`.

use std::time::Duration;

use monoscope_formats::testing::fuzz::{
    self, ALLOCATION_BOUND, CountingAllocator, EXTREMES, JsonEdit, largest_allocation, serial,
};
use monoscope_label::explainer::{HttpExplainer, HttpSettings, ResponseCache};
use monoscope_label::prompt::{parse_explanation, parse_yes_no};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn runner() -> TestRunner {
    fuzz::runner(1024)
}

/// Characters that trip text handling: lowercase of another byte length (`İ`, the Kelvin
/// sign, `ẞ`), case folding to several characters (`ß`, `ﬃ`), combining marks, zero-width and
/// bidirectional controls, line and paragraph separators, and the markdown the parser strips.
const TRICKY: &[char] = &[
    'İ', '\u{212A}', 'ẞ', 'ß', 'ﬃ', 'Σ', 'ς', '\u{0301}', '\u{200B}', '\u{200D}', '\u{202E}',
    '\u{2028}', '\u{2029}', '\u{FEFF}', '\u{0}', '\r', '\n', '\t', ' ', '*', '#', '"', '`', '<',
    '>', ':', '.', '1', 'y', 'Y', 'n', 'N', 'L', 'l', 'E', 'e',
];

/// Text: arbitrary, or built from tricky characters and the words the parsers look for.
fn answer() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(TRICKY).prop_map(String::from),
        2 => proptest::sample::select(vec![
            "Label:", "label:", "LABEL:", "**Label:**", "1. label:", "### Label:",
            "Explanation:", "EXPLANATION:", "explanation:", "Yes", "no", "TRUE", "False",
            "İzmir", "\u{212A}elvin", "\n", "\r\n",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ];
    prop_oneof![
        3 => proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => "\\PC{0,40}",
    ]
}

#[test]
fn answers() {
    let _serial = serial();
    runner()
        .run(&answer(), |text| {
            let ((explanation, yes_no), largest) =
                largest_allocation(|| (parse_explanation(&text), parse_yes_no(&text)));
            check_explanation(&text, explanation)?;
            let first: String = text
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            if ["yes", "true"].contains(&first.as_str()) {
                prop_assert_eq!(yes_no, Some(true));
            }
            if ["no", "false"].contains(&first.as_str()) {
                prop_assert_eq!(yes_no, Some(false));
            }
            prop_assert!(
                largest <= ALLOCATION_BOUND,
                "an allocation of {largest} bytes"
            );
            Ok(())
        })
        .unwrap();
}

/// A parsed explanation holds a non-empty label taken from the answer, within the limits.
fn check_explanation(
    answer: &str,
    parsed: Result<monoscope_label::prompt::Explanation, monoscope_label::LabelError>,
) -> Result<(), TestCaseError> {
    if let Ok(e) = parsed {
        prop_assert!(!e.label.is_empty());
        prop_assert!(
            answer.contains(&e.label),
            "label {:?} not in the answer",
            e.label
        );
        prop_assert!(e.label.chars().count() <= 80);
        prop_assert!(e.explanation.chars().count() <= 400);
    }
    Ok(())
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => Just(200u16),
        4 => proptest::sample::select(vec![
            0u16, 100, 201, 204, 299, 300, 301, 400, 401, 404, 408, 429, 500, 502, 503, 599, 600,
            u16::MAX,
        ]),
        1 => any::<u16>(),
    ]
}

fn retry_after() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just(String::new()),
        Just("5".to_string()),
        Just(" 60 ".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
        "\\PC{0,12}",
    ])
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => answer().prop_map(Value::from),
        2 => proptest::sample::select(EXTREMES.to_vec()).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![Just(-1.5), Just(1e308), Just(-0.0)].prop_map(Value::from),
        1 => prop_oneof![Just(Value::Null), Just(Value::Bool(true))],
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("content".to_string()),
                    Just("message".to_string()),
                    Just("choices".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..3,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let key = proptest::sample::select(vec![
        "choices",
        "message",
        "content",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "0",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(pick, value)| JsonEdit::Set { pick, value }),
        1 => any::<usize>().prop_map(|pick| JsonEdit::Remove { pick }),
        1 => (any::<usize>(), key, json_value())
            .prop_map(|(pick, key, value)| JsonEdit::Add { pick, key, value }),
    ]
}

/// A reply body: a valid reply edited, its text cut or spliced, any text, or JSON nested
/// deeper than any parser's recursion limit.
fn body() -> impl Strategy<Value = String> {
    let valid = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "Label: dates\nExplanation: Fires on calendar dates."},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 14, "total_tokens": 134},
    });
    let text = valid.to_string();
    let len = text.len();
    prop_oneof![
        6 => proptest::collection::vec(json_edit(), 1..4).prop_map(move |edits| {
            let mut v = valid.clone();
            for e in &edits {
                e.apply(&mut v);
            }
            v.to_string()
        }),
        1 => (0..len).prop_map({
            let text = text.clone();
            move |at| text[..at].to_string()
        }),
        1 => (0..len, answer()).prop_map(move |(at, insert)| {
            let mut t = text.clone();
            t.insert_str(at, &insert);
            t
        }),
        1 => answer(),
        1 => (1usize..20_000, prop_oneof![Just('['), Just('{')]).prop_map(|(depth, open)| {
            let unit = if open == '[' { "[" } else { "{\"a\":" };
            unit.repeat(depth)
        }),
    ]
}

#[test]
fn http_replies() {
    let _serial = serial();
    let endpoint = "http://127.0.0.1:9/v1/chat/completions";
    let explainer = HttpExplainer::new(
        HttpSettings {
            url: "http://127.0.0.1:9/v1".into(),
            model: "fuzz".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_retries: 0,
            backoff: Duration::from_millis(1),
            max_tokens: 64,
        },
        ResponseCache::new(None),
    );
    // A valid reply parses: the edits start from one that works.
    let ok = json!({"choices": [{"message": {"content": "yes"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
    let (text, usage) = explainer.parse_reply(200, None, &ok.to_string()).unwrap();
    assert_eq!(
        (text.as_str(), usage.tokens_in, usage.tokens_out),
        ("yes", 3, 1)
    );

    runner()
        .run(
            &(status(), retry_after(), body()),
            |(status, retry_after, body)| {
                let (outcome, largest) = largest_allocation(|| {
                    let reply = explainer.parse_reply(status, retry_after.as_deref(), &body);
                    reply.map(|(content, _)| {
                        let parsed = parse_explanation(&content);
                        let _ = parse_yes_no(&content);
                        (content, parsed)
                    })
                });
                match outcome {
                    Ok((content, parsed)) => check_explanation(&content, parsed)?,
                    Err(e) => {
                        let message = e.to_string();
                        prop_assert!(
                            message.contains(endpoint),
                            "error does not name the endpoint: {message}"
                        );
                    }
                }
                prop_assert!(
                    largest <= ALLOCATION_BOUND,
                    "an allocation of {largest} bytes"
                );
                Ok(())
            },
        )
        .unwrap();
}
