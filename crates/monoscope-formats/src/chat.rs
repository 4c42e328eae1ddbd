//! Chat templates. A model's chat format is a Jinja program (`tokenizer.chat_template` in GGUF,
//! `chat_template` in `tokenizer_config.json` or `chat_template.jinja` in a Hugging Face
//! directory); we run it with [`minijinja`], configured the way transformers configures jinja2
//! in `apply_chat_template`, so that a conversation renders to the same text as in Python:
//!
//! - `trim_blocks` and `lstrip_blocks` on, the final newline of the template dropped;
//! - the variables `messages` (a list of `{role, content}`), `add_generation_prompt`,
//!   `bos_token`, `eos_token` (empty when the tokenizer has none), `tools` and `documents`
//!   (`none`);
//! - the functions `raise_exception(msg)` (rendering fails with the template's message) and
//!   `strftime_now(format)` (the current date and time, in UTC, formatted as Python's
//!   `strftime` does), the filter `tojson` as `json.dumps` (transformers' override: no HTML
//!   escaping, `indent`, `separators`, `sort_keys`, `ensure_ascii`), `break`/`continue`, and
//!   Python's string and dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`...)
//!   through `minijinja_contrib::pycompat`.
//!
//! The template is compiled once, when the tokenizer is built; a template that does not compile
//! is reported with a warning and replaced by [`ChatTemplate::Plain`], so that it never stops a
//! model from loading. Rendering errors (a template that rejects a system message, or roles that
//! do not alternate) are [`FormatError::ChatTemplate`] errors naming the file and the message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, context};

use crate::error::{FormatError, Result};

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

/// The special-token strings a template sees as `bos_token` and `eos_token` (transformers passes
/// the tokenizer's `special_tokens_map`). Empty when the tokenizer has no such token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos_token: String,
    pub eos_token: String,
}

/// A model's chat format.
#[derive(Clone)]
pub enum ChatTemplate {
    /// The model's own Jinja template, compiled.
    Jinja(JinjaTemplate),
    /// No template (or one that does not compile): each message becomes `{role}: {content}\n`,
    /// and the generation prompt is `assistant: `. Never fails, but an instruction-tuned model
    /// will follow it less well than its own format.
    Plain,
}

/// A compiled Jinja chat template and the file it came from (for error messages).
#[derive(Clone)]
pub struct JinjaTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    origin: PathBuf,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compile a Jinja chat template. `origin` is the file it came from, named in errors.
    pub fn compile(source: &str, origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        let env = environment(source).map_err(|e| FormatError::ChatTemplate {
            path: origin.clone(),
            detail: format!("the chat template does not compile: {e}"),
        })?;
        Ok(Self::Jinja(JinjaTemplate {
            env: Arc::new(env),
            source: source.into(),
            origin,
        }))
    }

    /// The chat format of a model whose template source is `template`: compiled, or
    /// [`ChatTemplate::Plain`] when there is none or it does not compile (with a warning naming
    /// the error: a broken template must not stop the model from loading).
    pub fn from_source(template: Option<&str>, origin: &Path) -> Self {
        let Some(source) = template else {
            return Self::Plain;
        };
        match Self::compile(source, origin) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{e}; chat prompts use the plain `role: content` format instead");
                Self::Plain
            }
        }
    }

    /// The Jinja source, unless this is the plain format.
    pub fn source(&self) -> Option<&str> {
        match self {
            Self::Jinja(t) => Some(&t.source),
            Self::Plain => None,
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Self::Plain)
    }

    /// Render `messages`; with `add_generation_prompt`, end with the opening of an assistant
    /// turn so that generation continues as the assistant. `strftime_now` sees the current time.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
    ) -> Result<String> {
        self.render_at(messages, add_generation_prompt, tokens, SystemTime::now())
    }

    /// [`render`](Self::render) with `strftime_now` formatting `now` (in UTC) instead of the
    /// current time, for reproducible output.
    pub fn render_at(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
        now: SystemTime,
    ) -> Result<String> {
        match self {
            Self::Jinja(t) => t.render(messages, add_generation_prompt, tokens, now),
            Self::Plain => {
                let mut out = String::new();
                for m in messages {
                    out += &format!("{}: {}\n", m.role, m.content);
                }
                if add_generation_prompt {
                    out += "assistant: ";
                }
                Ok(out)
            }
        }
    }
}

impl JinjaTemplate {
    fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
        now: SystemTime,
    ) -> Result<String> {
        // Maps keep insertion order (minijinja's `preserve_order`), as Python dicts do.
        let messages: Value = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let ctx = context! {
            messages,
            add_generation_prompt,
            bos_token => tokens.bos_token.as_str(),
            eos_token => tokens.eos_token.as_str(),
            tools => (),
            documents => (),
            strftime_now => Value::from_function(move |format: &str| strftime(now, format)),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.error(e))?;
        template.render(ctx).map_err(|e| self.error(e))
    }

    fn error(&self, e: minijinja::Error) -> FormatError {
        let raised = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Raised>());
        let detail = match raised {
            Some(Raised(msg)) => format!("the chat template rejects the conversation: {msg}"),
            None => format!("rendering the chat template failed: {e}"),
        };
        FormatError::ChatTemplate {
            path: self.origin.clone(),
            detail,
        }
    }
}

// Summarised: the environment has no useful Debug form, and the source can be long.
impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jinja(t) => f
                .debug_struct("Jinja")
                .field("origin", &t.origin)
                .field("source_len", &t.source.len())
                .finish_non_exhaustive(),
            Self::Plain => f.write_str("Plain"),
        }
    }
}

impl fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("origin", &self.origin)
            .field("source_len", &self.source.len())
            .finish_non_exhaustive()
    }
}

/// The environment transformers builds (`_compile_jinja_template`), with the template added.
fn environment(source: &str) -> std::result::Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_template_owned(TEMPLATE_NAME, source.to_owned())?;
    Ok(env)
}

/// The message of a template's `raise_exception`, kept as the error's source to tell it from
/// engine errors.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, unescaped for HTML.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_owned()),
        Some(v) => Some(" ".repeat(usize::try_from(v)?)),
    };
    // Python's defaults: (', ', ': ') on one line, (',', ': ') when indenting.
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let item = s.get_item(&Value::from(0))?;
            let key = s.get_item(&Value::from(1))?;
            match (item.as_str(), key.as_str()) {
                (Some(i), Some(k)) => (i.to_owned(), k.to_owned()),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ));
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let mut out = String::new();
    let options = JsonOptions {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    write_json(&mut out, value, &options, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    v: &Value,
    o: &JsonOptions,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(v.clone())?));
            }
        }
        ValueKind::String | ValueKind::Bytes | ValueKind::Invalid | ValueKind::Plain => {
            json_string(out, &v.to_string(), o.ensure_ascii);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, o, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, depth + 1);
                let k = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                    ValueKind::None => "null".to_owned(),
                    ValueKind::Bool => if key.is_true() { "true" } else { "false" }.to_owned(),
                    _ => key.to_string(),
                };
                json_string(out, &k, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, &v.get_item(key)?, o, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => json_string(out, &v.to_string(), o.ensure_ascii),
    }
    Ok(())
}

/// Python's `repr(float)` as `json.dumps` writes it.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's shortest round-trip digits are Python's; only the layout differs.
    let s = format!("{x:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let plain = format!("{x}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let mantissa = mantissa.to_owned();
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `datetime.strftime(format)` (C locale) for the UTC time `now`. `%z` and `%Z` are
/// empty, as for the naive `datetime.now()` transformers formats; `%-d`-style flags drop the
/// padding as glibc does; unknown directives are copied through.
fn strftime(now: SystemTime, format: &str) -> String {
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let micros = since.subsec_micros();
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (tod / 3600, tod % 3600 / 60, tod % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday; 0 = Monday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let s = match d {
            'a' => DAYS[weekday][..3].to_owned(),
            'A' => DAYS[weekday].to_owned(),
            'w' => ((weekday + 1) % 7).to_string(),
            'u' => (weekday + 1).to_string(),
            'd' => num(day, 2),
            'e' => format!("{day:2}"),
            'b' | 'h' => MONTHS[month as usize - 1][..3].to_owned(),
            'B' => MONTHS[month as usize - 1].to_owned(),
            'm' => num(month, 2),
            'y' => num(year.rem_euclid(100), 2),
            'Y' => year.to_string(),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'p' => if hour < 12 { "AM" } else { "PM" }.to_owned(),
            'M' => num(minute, 2),
            'S' => num(second, 2),
            'f' => format!("{micros:06}"),
            'j' => num(yday, 3),
            'z' | 'Z' => String::new(),
            'D' | 'x' => format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'T' | 'X' => format!("{hour:02}:{minute:02}:{second:02}"),
            'R' => format!("{hour:02}:{minute:02}"),
            'c' => format!(
                "{} {} {day:2} {hour:02}:{minute:02}:{second:02} {year}",
                &DAYS[weekday][..3],
                &MONTHS[month as usize - 1][..3]
            ),
            'n' => "\n".to_owned(),
            't' => "\t".to_owned(),
            '%' => "%".to_owned(),
            other => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                other.to_string()
            }
        };
        out.push_str(&s);
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn jinja(source: &str) -> ChatTemplate {
        ChatTemplate::compile(source, "test.jinja").unwrap()
    }

    fn render(t: &ChatTemplate, m: &[ChatMessage], gen_prompt: bool) -> Result<String> {
        t.render_at(m, gen_prompt, &TemplateTokens::default(), at(0))
    }

    #[test]
    fn plain_format() {
        let m = [ChatMessage::new("user", " hi ")];
        assert_eq!(
            render(&ChatTemplate::Plain, &m, true).unwrap(),
            "user:  hi \nassistant: "
        );
        assert!(ChatTemplate::from_source(None, Path::new("x")).is_plain());
    }

    #[test]
    fn broken_template_falls_back_to_plain() {
        let t = ChatTemplate::from_source(Some("{% for m in messages %}"), Path::new("m.gguf"));
        assert!(t.is_plain());
        let e = ChatTemplate::compile("{{ 1 + }}", "m.gguf").unwrap_err();
        assert!(e.to_string().starts_with("m.gguf: chat template: "), "{e}");
    }

    #[test]
    fn raise_exception_is_an_error_with_the_message() {
        let t = jinja("{{ raise_exception('System role not supported') }}");
        let e = render(&t, &[], false).unwrap_err().to_string();
        assert_eq!(
            e,
            "test.jinja: chat template: the chat template rejects the conversation: \
             System role not supported"
        );
    }

    #[test]
    fn engine_errors_are_errors_not_panics() {
        let t = jinja("{{ messages[0].content.nosuchmethod() }}");
        let e = render(&t, &[ChatMessage::new("user", "x")], false).unwrap_err();
        assert!(
            e.to_string().contains("rendering the chat template failed"),
            "{e}"
        );
    }

    #[test]
    fn whitespace_control_matches_transformers() {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before
        // it; the template's final newline is dropped.
        let t = jinja(
            "{% for m in messages %}\n  {% if true %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}\n",
        );
        let m = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert_eq!(render(&t, &m, false).unwrap(), "[a]\n[b]\n");
    }

    #[test]
    fn python_string_methods() {
        let t = jinja(
            "{{ messages[0].content.strip() }}|{{ messages[0].content.split(',')[-1] }}|\
             {{ messages[0].content.startswith(' a') }}",
        );
        let m = [ChatMessage::new("user", " a,b ")];
        assert_eq!(render(&t, &m, false).unwrap(), "a,b|b |True");
    }

    #[test]
    fn tojson_is_json_dumps() {
        let t = jinja(
            r#"{{ {"b": 1, "a": [1, 2.5, "é\n"], "c": none, "d": true, "e": {}} | tojson }}
{{ {"b": 1, "a": [1, {"x": "y"}]} | tojson(indent=2) }}
{{ {"b": 1, "a": "é"} | tojson(sort_keys=true, ensure_ascii=true) }}"#,
        );
        assert_eq!(
            render(&t, &[], false).unwrap(),
            "{\"b\": 1, \"a\": [1, 2.5, \"é\\n\"], \"c\": null, \"d\": true, \"e\": {}}\n\
             {\n  \"b\": 1,\n  \"a\": [\n    1,\n    {\n      \"x\": \"y\"\n    }\n  ]\n}\n\
             {\"a\": \"\\u00e9\", \"b\": 1}"
        );
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
        assert_eq!(python_float(0.0001), "0.0001");
    }

    #[test]
    fn strftime_formats_like_python() {
        // 2025-03-09 14:05:07 UTC, a Sunday.
        let t = at(1_741_529_107);
        assert_eq!(strftime(t, "%d %b %Y"), "09 Mar 2025");
        assert_eq!(
            strftime(t, "%A %B %-d %H:%M:%S %I%p %j %y %m %w %%"),
            "Sunday March 9 14:05:07 02PM 068 25 03 0 %"
        );
        assert_eq!(strftime(at(0), "%Y-%m-%d %a"), "1970-01-01 Thu");
        // 2024-02-29 (leap day).
        assert_eq!(strftime(at(1_709_164_800), "%F %j"), "2024-02-29 060");
        let t = jinja("{{ strftime_now('%d %b %Y') }}");
        let got = t
            .render_at(&[], false, &TemplateTokens::default(), at(1_741_529_107))
            .unwrap();
        assert_eq!(got, "09 Mar 2025");
    }
}
