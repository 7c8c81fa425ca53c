//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! Templates are Jinja (as in Hugging Face `tokenizer_config.json` and GGUF `tokenizer.chat_template`) and
//! are rendered with `minijinja`, with Python's string/list/dict methods (`.strip()`, `.startswith()`,
//! `.items()`, ... from `minijinja-contrib`'s pycompat) and `raise_exception(msg)`. A template comes from
//! a file someone else wrote, so rendering is sandboxed: no file or network access, a bounded number of
//! instructions (minijinja "fuel", which also ends infinite loops), bounded recursion, bounded widths
//! and bounded output; what no in-process check can bound (memory) is bounded by rendering in a
//! worker process whose address space is capped ([`sandbox`], used by `bitnet chat` and `bitnet serve`).
//!
//! [`ChatTemplate::resolve`] picks the template: an explicit `--chat-template FILE|NAME`, else the model
//! file's own, unless it is missing or known to be wrong (bitnet.cpp's converter writes a
//! `Human: ... BITNETAssistant:` template that the 2B-4T model was never trained on), in which case the
//! built-in BitNet b1.58 2B-4T template is used.

pub mod sandbox;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Rest, Value};
use minijinja::{Environment, Error as JinjaError, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::Tokenizer;
use sandbox::{Sandbox, WorkerRequest};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("chat template {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("chat template {name}: rendering failed: {message}")]
    Render { name: String, message: String },
    #[error("chat template {name}: the rendered prompt exceeds {limit} bytes")]
    TooLong { name: String, limit: usize },
    #[error("chat template file {path}: {message}")]
    File { path: String, message: String },
}

/// The BitNet b1.58 2B-4T format: `<|begin_of_text|>System: ...<|eot_id|>User: ...<|eot_id|>Assistant: `,
/// each message's content trimmed, roles capitalized.
pub const BITNET_TEMPLATE: &str = "{%- for message in messages -%}\
{%- if loop.first %}{{ bos_token }}{% endif -%}\
{{ message.role | capitalize }}: {{ message.content | trim }}<|eot_id|>\
{%- endfor -%}\
{%- if add_generation_prompt %}Assistant: {% endif -%}";

/// The Llama-3 instruct format (header tokens around each role).
pub const LLAMA3_TEMPLATE: &str = "{{ bos_token }}\
{%- for message in messages -%}\
<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content | trim }}<|eot_id|>\
{%- endfor -%}\
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif -%}";

/// ChatML (`<|im_start|>role\n...<|im_end|>`).
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}\
<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n\
{%- endfor -%}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}";

/// Names accepted by `--chat-template NAME`.
pub const BUILTIN_NAMES: &[&str] = &["bitnet", "llama3", "chatml"];

/// Upper bounds on one rendering.
#[derive(Clone, Copy, Debug)]
pub struct RenderLimits {
    /// minijinja instructions (fuel); bounds time.
    pub fuel: u64,
    /// Bytes of output.
    pub max_output_bytes: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            fuel: 2_000_000,
            max_output_bytes: 4 << 20,
        }
    }
}

/// A parsed chat template ready to render.
pub struct ChatTemplate {
    name: String,
    source: String,
    env: Environment<'static>,
    limits: RenderLimits,
    /// Where renders run: `None` in this process.
    sandbox: Option<Arc<Sandbox>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> Result<String, JinjaError> {
    Err(JinjaError::new(
        ErrorKind::InvalidOperation,
        format!("raise_exception: {msg}"),
    ))
}

/// Largest width, padding or indentation a template may ask a filter for.
pub const MAX_WIDTH: u64 = 1024;

fn too_wide(what: &str) -> JinjaError {
    JinjaError::new(
        ErrorKind::InvalidOperation,
        format!("{what} is larger than the limit of {MAX_WIDTH} (a chat template should not need that)"),
    )
}

/// A numeric filter argument (or keyword argument) used as a width.
fn check_width_value(v: &Value) -> Result<(), JinjaError> {
    if let Some(n) = v.as_i64() {
        if n.unsigned_abs() > MAX_WIDTH {
            return Err(too_wide(&format!("width {n}")));
        }
    } else if v.kind() == minijinja::value::ValueKind::Map {
        // Keyword arguments (`indent=...`, `width=...`).
        if let Ok(iter) = v.try_iter() {
            for k in iter {
                if let Ok(x) = v.get_item(&k) {
                    check_width_value(&x)?;
                }
            }
        }
    }
    Ok(())
}

/// The widths and precisions of printf-style (`%-999999999d`, `%.99999f`) and `str.format`
/// (`{:>99999999}`) specs; plain text around them (dates, numbers) is not a width.
fn check_format_widths(spec: &str) -> Result<(), JinjaError> {
    let check_digits = |part: &str| -> Result<(), JinjaError> {
        let mut run = 0u64;
        for c in part.chars().chain(std::iter::once(' ')) {
            match c.to_digit(10) {
                Some(d) => run = run.saturating_mul(10).saturating_add(u64::from(d)),
                None => {
                    if run > MAX_WIDTH {
                        return Err(too_wide(&format!("a format width of {run}")));
                    }
                    run = 0;
                }
            }
        }
        Ok(())
    };
    // printf: `%` flags width [.precision] [length] type.
    let b = spec.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let start = i + 1;
            let mut k = start;
            while k < b.len() && (b[k].is_ascii_digit() || b"-+ #0.*(".contains(&b[k])) {
                k += 1;
            }
            check_digits(&spec[start..k])?;
            i = k.max(i + 1);
        } else {
            i += 1;
        }
    }
    // str.format: the part after ':' inside `{...}`.
    let mut rest = spec;
    while let Some(a) = rest.find('{') {
        let Some(len) = rest[a..].find('}') else { break };
        let field = &rest[a + 1..a + len];
        if let Some((_, fmt)) = field.split_once(':') {
            check_digits(fmt)?;
        }
        rest = &rest[a + len..];
    }
    Ok(())
}

/// Whether a template is one known to be wrong for the model that carries it.
pub fn is_known_bad(source: &str) -> Option<&'static str> {
    if source.contains("BITNETAssistant") {
        return Some(
            "bitnet.cpp's converter template ('Human: ... BITNETAssistant:'), which BitNet b1.58 was not trained on",
        );
    }
    None
}

impl ChatTemplate {
    /// Parses `source`; `name` appears in errors (a file name, `"bitnet (built-in)"`, ...).
    pub fn new(name: &str, source: &str) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(RenderLimits::default().fuel));
        env.set_recursion_limit(64);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(|state, value, method, args| {
            if method == "format" {
                check_format_widths(value.as_str().unwrap_or(""))?;
            }
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
        });
        env.add_function("raise_exception", raise_exception);
        // Filters whose numeric arguments size their output: bounded, so that a few bytes of template
        // cannot ask for gigabytes (`"%999999999d"|format(1)`, `x|indent(999999999)`,
        // `x|tojson(indent=999999999)`).
        for (name, f) in [
            ("indent", Value::from_function(minijinja::filters::indent)),
            ("tojson", Value::from_function(minijinja::filters::tojson)),
        ] {
            env.add_filter(name, move |state: &minijinja::State, args: Rest<Value>| {
                for a in args.iter().skip(1) {
                    check_width_value(a)?;
                }
                f.call(state, &args)
            });
        }
        let format = Value::from_function(minijinja::filters::format);
        env.add_filter("format", move |state: &minijinja::State, args: Rest<Value>| {
            check_format_widths(args.first().and_then(|v| v.as_str()).unwrap_or(""))?;
            format.call(state, &args)
        });
        // minijinja panics on some malformed input (found by the chat_template fuzz target): a panic
        // is this template's error, not the process's.
        crate::guarded_in("the template engine", "this template", || {
            env.add_template_owned("chat", source.to_string())
        })
        .map_err(|message| ChatTemplateError::Invalid {
            name: name.to_string(),
            message,
        })?
        .map_err(|e| ChatTemplateError::Invalid {
            name: name.to_string(),
            message: format!("{e:#}"),
        })?;
        Ok(ChatTemplate {
            name: name.to_string(),
            source: source.to_string(),
            env,
            limits: RenderLimits::default(),
            sandbox: None,
        })
    }

    /// A built-in template by name (see [`BUILTIN_NAMES`]).
    pub fn builtin(name: &str) -> Option<Self> {
        ChatTemplate::new(&format!("{name} (built-in)"), Self::builtin_source(name)?).ok()
    }

    /// The Jinja source of a built-in template (see [`BUILTIN_NAMES`]).
    pub fn builtin_source(name: &str) -> Option<&'static str> {
        match name {
            "bitnet" => Some(BITNET_TEMPLATE),
            "llama3" => Some(LLAMA3_TEMPLATE),
            "chatml" => Some(CHATML_TEMPLATE),
            _ => None,
        }
    }

    /// The Jinja source for `--chat-template FILE|NAME` (a built-in name or a file), checked to parse.
    pub fn source_of_spec(spec: &str) -> Result<String, ChatTemplateError> {
        if let Some(src) = Self::builtin_source(spec) {
            return Ok(src.to_string());
        }
        let src = std::fs::read_to_string(spec).map_err(|e| ChatTemplateError::File {
            path: spec.to_string(),
            message: format!(
                "{e} (not a file, and not a built-in name: {})",
                BUILTIN_NAMES.join(", ")
            ),
        })?;
        ChatTemplate::new(spec, &src)?;
        Ok(src)
    }

    /// Changes the rendering bounds.
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.set_limits(limits);
        self
    }

    /// Changes the rendering bounds in place.
    pub fn set_limits(&mut self, limits: RenderLimits) {
        self.env.set_fuel(Some(limits.fuel));
        self.limits = limits;
    }

    /// Renders in `sandbox`'s worker process from now on (see [`sandbox`]).
    pub fn with_sandbox(mut self, sandbox: Option<Arc<Sandbox>>) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Whether renders run in a worker process.
    pub fn is_sandboxed(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from, e.g. `"model file"`, `"bitnet (built-in)"`, a path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Chooses the template for a model: `spec` (`--chat-template`: a built-in name or a file holding
    /// Jinja), else the tokenizer's own, else (missing, unparsable or known to be wrong) the built-in
    /// BitNet template. Returns the template and, when the file's template was replaced, why.
    pub fn resolve(spec: Option<&str>, tok: &Tokenizer) -> Result<(Self, Option<String>), ChatTemplateError> {
        Self::resolve_in(spec, tok, None)
    }

    /// [`ChatTemplate::resolve`], rendering in `sandbox`, and checked when loaded: a template from a
    /// file (`--chat-template FILE` or the model's) must render a plain conversation
    /// ([`ChatTemplate::probe`]). A `--chat-template` file that fails is an error; a model's own
    /// template that fails is replaced by the built-in one, with the reason in the note.
    pub fn resolve_in(
        spec: Option<&str>,
        tok: &Tokenizer,
        sandbox: Option<Arc<Sandbox>>,
    ) -> Result<(Self, Option<String>), ChatTemplateError> {
        let (t, note) = Self::resolve_unchecked(spec, tok)?;
        let t = t.with_sandbox(sandbox.clone());
        if t.name.ends_with("(built-in)") {
            return Ok((t, note));
        }
        match t.probe(tok) {
            Ok(()) => Ok((t, note)),
            Err(e) if spec.is_some() => Err(e),
            Err(e) => {
                let b = ChatTemplate::new("bitnet (built-in)", BITNET_TEMPLATE)?.with_sandbox(sandbox);
                Ok((b, Some(format!("{e}; using the built-in BitNet b1.58 template"))))
            }
        }
    }

    /// Renders a plain conversation (user, assistant, user) to check a template when it is loaded,
    /// rather than on a user's first message.
    pub fn probe(&self, tok: &Tokenizer) -> Result<(), ChatTemplateError> {
        let conversation = [
            ChatMessage::new("user", "Hello!"),
            ChatMessage::new("assistant", "Hi. How can I help?"),
            ChatMessage::new("user", "Tell me a short story."),
        ];
        self.render_for(tok, &conversation, true).map(|_| ())
    }

    fn resolve_unchecked(spec: Option<&str>, tok: &Tokenizer) -> Result<(Self, Option<String>), ChatTemplateError> {
        if let Some(spec) = spec {
            if let Some(t) = ChatTemplate::builtin(spec) {
                return Ok((t, None));
            }
            let path = Path::new(spec);
            let src = std::fs::read_to_string(path).map_err(|e| ChatTemplateError::File {
                path: spec.to_string(),
                message: format!(
                    "{e} (not a file, and not a built-in name: {})",
                    BUILTIN_NAMES.join(", ")
                ),
            })?;
            return Ok((ChatTemplate::new(spec, &src)?, None));
        }
        let fallback = |why: String| {
            let t =
                ChatTemplate::new("bitnet (built-in)", BITNET_TEMPLATE).map_err(|e| ChatTemplateError::Invalid {
                    name: "bitnet (built-in)".into(),
                    message: e.to_string(),
                })?;
            Ok((t, Some(why)))
        };
        match tok.chat_template() {
            None => fallback("the model has no chat template; using the built-in BitNet b1.58 template".into()),
            Some(src) => {
                if let Some(why) = is_known_bad(src) {
                    return fallback(format!(
                        "the model's chat template is {why}; using the built-in BitNet b1.58 template"
                    ));
                }
                match ChatTemplate::new("model file", src) {
                    Ok(t) => Ok((t, None)),
                    Err(e) => fallback(format!("{e}; using the built-in BitNet b1.58 template")),
                }
            }
        }
    }

    /// Renders `messages`. `add_generation_prompt` appends the start of the assistant's turn.
    /// `bos_token` / `eos_token` are the special tokens' text (empty when the model has none).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ChatTemplateError> {
        let Some(sandbox) = &self.sandbox else {
            return self.render_in_process(messages, add_generation_prompt, bos_token, eos_token);
        };
        sandbox.render(&WorkerRequest {
            name: self.name.clone(),
            source: self.source.clone(),
            messages: messages.to_vec(),
            add_generation_prompt,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            fuel: self.limits.fuel,
            max_output_bytes: self.limits.max_output_bytes,
        })
    }

    /// [`ChatTemplate::render`] in this process, whatever the sandbox.
    pub fn render_in_process(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self.env.get_template("chat").map_err(|e| self.render_err(e))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        let mut out = LimitedWriter {
            buf: Vec::new(),
            limit: self.limits.max_output_bytes,
            overflow: false,
        };
        // minijinja 2.24's printf-style `format` slices a multi-byte character in two on some specs
        // (`'%(\u{FFFD}'|format(...)`, found by the chat_template fuzz target): its panics end this
        // render only.
        let rendered = crate::guarded_in("the template engine", "this template", || {
            tmpl.render_captured_to(ctx, &mut out)
        })
        .map_err(|message| ChatTemplateError::Render {
            name: self.name.clone(),
            message,
        })?;
        match rendered {
            Ok(_) => {}
            Err(_) if out.overflow => {
                return Err(ChatTemplateError::TooLong {
                    name: self.name.clone(),
                    limit: self.limits.max_output_bytes,
                })
            }
            Err(e) => return Err(self.render_err(e)),
        }
        String::from_utf8(out.buf).map_err(|e| ChatTemplateError::Render {
            name: self.name.clone(),
            message: format!("output is not UTF-8: {e}"),
        })
    }

    /// Renders with the tokenizer's BOS/EOS text.
    pub fn render_for(
        &self,
        tok: &Tokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
        self.render(
            messages,
            add_generation_prompt,
            &text(tok.bos_id()),
            &text(tok.eos_id()),
        )
    }

    fn render_err(&self, e: JinjaError) -> ChatTemplateError {
        let message = match e.kind() {
            ErrorKind::OutOfFuel => "the template ran too long (out of fuel)".to_string(),
            _ => {
                let mut m = e.to_string();
                if let Some(d) = e.detail() {
                    if !m.contains(d) {
                        m = format!("{m}: {d}");
                    }
                }
                m
            }
        };
        ChatTemplateError::Render {
            name: self.name.clone(),
            message,
        }
    }
}

/// A writer that fails once more than `limit` bytes were written.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.overflow = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
    }

    #[test]
    fn builtin_bitnet_template_shape() {
        let t = ChatTemplate::builtin("bitnet").unwrap();
        let s = t
            .render(&msgs(&[("user", " Hi "), ("assistant", "Hello")]), true, "<s>", "</s>")
            .unwrap();
        assert_eq!(s, "<s>User: Hi<|eot_id|>Assistant: Hello<|eot_id|>Assistant: ");
        let s = t.render(&msgs(&[("user", "Hi")]), false, "<s>", "</s>").unwrap();
        assert_eq!(s, "<s>User: Hi<|eot_id|>");
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "t",
            "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
             {{ raise_exception('bad role ' + m.role) }}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", " a "), ("assistant", "b")]), false, "", "")
                .unwrap(),
            "A|B|"
        );
        let e = t
            .render(&msgs(&[("tool", "x")]), false, "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad role tool"), "{e}");
    }

    #[test]
    fn widths_and_indents_are_bounded_and_normal_uses_still_render() {
        let m = msgs(&[("user", "hi")]);
        for src in [
            "{{ '%100000000d'|format(1) }}",
            "{{ '%-100000000s'|format('x') }}",
            "{{ '%.100000000f'|format(1.5) }}",
            "{{ '{:>100000000}'.format('x') }}",
            "{{ messages[0].content|indent(100000000) }}",
            "{{ messages[0].content|indent(width=100000000) }}",
            "{{ messages|tojson(indent=100000000) }}",
            "{{ messages|tojson(100000000) }}",
        ] {
            let t = ChatTemplate::new("t", src).unwrap();
            let e = t.render(&m, false, "", "").unwrap_err().to_string();
            assert!(e.contains("larger than the limit"), "{src}: {e}");
        }
        // What real templates do keeps working: small widths, dates and numbers in format strings.
        let t = ChatTemplate::new(
            "t",
            "{{ '%5d|%-3s|%.2f'|format(42, 'a', 1.5) }} {{ 'Date: 26 Jul 2024 {}'.format(2024) }} \
             {{ messages|tojson(indent=4)|length > 0 }} {{ 'a\nb'|indent(2) }}",
        )
        .unwrap();
        let out = t.render(&m, false, "", "").unwrap();
        assert!(out.starts_with("   42|a  |1.50 Date: 26 Jul 2024 2024 "), "{out}");
        assert!(out.ends_with("a\n  b"), "{out}");
    }

    #[test]
    fn hostile_templates_are_bounded() {
        let lim = RenderLimits {
            fuel: 100_000,
            max_output_bytes: 10_000,
        };
        let spin = ChatTemplate::new(
            "spin",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap()
        .with_limits(lim);
        let e = spin.render(&[], false, "", "").unwrap_err().to_string();
        assert!(e.contains("out of fuel"), "{e}");
        let big = ChatTemplate::new("big", "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}")
            .unwrap()
            .with_limits(lim);
        assert!(matches!(
            big.render(&[], false, "", ""),
            Err(ChatTemplateError::TooLong { limit: 10_000, .. })
        ));
        let deep = ChatTemplate::new("deep", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
        assert!(deep.render(&[], false, "", "").is_err());
        assert!(ChatTemplate::new("syntax", "{% for %}").is_err());
        let inc = ChatTemplate::new("inc", "{% include '/etc/passwd' %}").unwrap();
        assert!(inc.render(&[], false, "", "").is_err(), "no file access");
    }

    /// minijinja panics inside `format` on a multi-byte character after `%(`; the render fails, the
    /// caller does not.
    #[test]
    fn a_panic_inside_the_template_engine_is_an_error() {
        let t = ChatTemplate::new("t", "{{ '%(\u{E9}s'|format(1) }}").unwrap();
        let e = t.render(&[], false, "", "").unwrap_err().to_string();
        assert!(e.contains("the template engine failed"), "{e}");
    }

    #[test]
    fn bitnet_cpp_template_is_detected() {
        let bad = "{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}";
        assert!(is_known_bad(bad).is_some());
        assert!(is_known_bad(BITNET_TEMPLATE).is_none());
    }
}
