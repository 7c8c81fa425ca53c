//! `bitnet._native`: the engine's types behind a Python API (see `python/bitnet/__init__.pyi`).
//!
//! Weights stay where the loader put them (memory-mapped, never copied); the GIL is released while
//! the model computes, and re-taken once per generated token to see Ctrl-C. Errors become Python
//! exceptions with the engine's messages: `OSError` (`FileNotFoundError`) for files that cannot be
//! read, `ValueError` for bad arguments and bad model files, `KeyboardInterrupt` for Ctrl-C.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use bitnet_engine::{chat_prompt, generate, Decoding, GenerateOptions, SamplerConfig, StopReason};
use bitnet_kernels::pool;
use bitnet_model::{BitNetModel, InferenceState, KvType, LoadOptions, LogitsWanted};
use bitnet_tokenizer::chat_template::sandbox::{Sandbox, SandboxLimits};
use bitnet_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{
    PyFileNotFoundError, PyNotImplementedError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The demo model the `bitnet` binary also carries (`models/bitnet-demo-i2_s.gguf`).
static DEMO_MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/bitnet-demo-i2_s.gguf"
));

/// An engine error as the Python exception that fits it: I/O errors (a missing or unreadable file)
/// as `OSError`, everything else (bad arguments, a malformed model file) as `ValueError`.
fn to_py(e: anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return if io.kind() == std::io::ErrorKind::NotFound {
                PyFileNotFoundError::new_err(msg)
            } else {
                PyOSError::new_err(msg)
            };
        }
    }
    PyValueError::new_err(msg)
}

/// What a `Model` holds; shared with running streams.
struct Inner {
    model: BitNetModel,
    tok: Tokenizer,
    template: ChatTemplate,
    ctx: usize,
    source: String,
}

/// A loaded model: a GGUF file or a Hugging Face folder (every format `bitnet -m` reads),
/// `hf:ORG/REPO[:FILE][@REVISION]` (fetched into the Hugging Face cache), or the built-in demo model
/// when `path` is None.
#[pyclass(module = "bitnet", frozen)]
struct Model {
    inner: Arc<Inner>,
}

/// Sampling and stopping settings shared by `generate`, `stream` and `chat`.
#[derive(Clone)]
struct Sampling {
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    seed: Option<u64>,
    repeat_penalty: f32,
    repeat_last_n: i64,
    presence_penalty: f32,
    frequency_penalty: f32,
    stop: Vec<String>,
    ignore_eos: bool,
}

/// The keyword arguments of `generate`, `stream` and `chat`, parsed in one place.
struct CallArgs {
    sampling: Sampling,
    add_bos: bool,
    stream: bool,
}

impl Sampling {
    /// Reads the sampling keywords (and `extra`, the ones only `method` takes) from `kwargs`; an
    /// unknown keyword is a TypeError, as Python reports one.
    fn from_kwargs(
        method: &str,
        kwargs: Option<&Bound<'_, PyDict>>,
        max_tokens: usize,
        extra: &[&str],
    ) -> PyResult<CallArgs> {
        let mut a = CallArgs {
            sampling: Sampling {
                max_tokens,
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                seed: None,
                repeat_penalty: 1.0,
                repeat_last_n: 64,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                stop: Vec::new(),
                ignore_eos: false,
            },
            add_bos: true,
            stream: false,
        };
        let Some(kwargs) = kwargs else { return Ok(a) };
        for (k, v) in kwargs.iter() {
            let key: String = k.extract()?;
            let s = &mut a.sampling;
            let bad = |e: PyErr| PyTypeError::new_err(format!("{method}(): argument '{key}': {e}"));
            match key.as_str() {
                "max_tokens" => s.max_tokens = v.extract().map_err(bad)?,
                "temperature" => s.temperature = v.extract().map_err(bad)?,
                "top_k" => s.top_k = v.extract().map_err(bad)?,
                "top_p" => s.top_p = v.extract().map_err(bad)?,
                "min_p" => s.min_p = v.extract().map_err(bad)?,
                "seed" => s.seed = v.extract().map_err(bad)?,
                "stop" => s.stop = v.extract::<Option<Vec<String>>>().map_err(bad)?.unwrap_or_default(),
                "repeat_penalty" => s.repeat_penalty = v.extract().map_err(bad)?,
                "repeat_last_n" => s.repeat_last_n = v.extract().map_err(bad)?,
                "presence_penalty" => s.presence_penalty = v.extract().map_err(bad)?,
                "frequency_penalty" => s.frequency_penalty = v.extract().map_err(bad)?,
                "ignore_eos" if extra.contains(&"ignore_eos") => s.ignore_eos = v.extract().map_err(bad)?,
                "add_bos" if extra.contains(&"add_bos") => a.add_bos = v.extract().map_err(bad)?,
                "stream" if extra.contains(&"stream") => a.stream = v.extract().map_err(bad)?,
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "{method}() got an unexpected keyword argument '{key}'"
                    )))
                }
            }
        }
        Ok(a)
    }

    fn options(&self, ctx: usize) -> PyResult<GenerateOptions> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let repeat_last_n = match self.repeat_last_n {
            -1 => ctx,
            n if n >= 0 => n as usize,
            n => {
                return Err(PyValueError::new_err(format!(
                    "repeat_last_n must be -1 or >= 0, got {n}"
                )))
            }
        };
        let sampler = SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        };
        sampler.validate().map_err(PyValueError::new_err)?;
        Ok(GenerateOptions {
            max_new_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            sampler,
            stop: self.stop.clone(),
        })
    }
}

impl Model {
    fn encode(&self, text: &str, add_bos: bool) -> PyResult<Vec<u32>> {
        let tok = &self.inner.tok;
        tok.encode(text, add_bos && tok.add_bos_default())
            .map_err(|e| PyValueError::new_err(format!("tokenizing: {e}")))
    }

    fn chat_ids(&self, messages: &Bound<'_, PyList>) -> PyResult<Vec<u32>> {
        let mut msgs = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let d = m.cast::<PyDict>().map_err(|_| {
                PyValueError::new_err(format!("messages[{i}] must be a dict with 'role' and 'content'"))
            })?;
            let field = |k: &str| -> PyResult<String> {
                d.get_item(k)?
                    .ok_or_else(|| PyValueError::new_err(format!("messages[{i}] has no '{k}'")))?
                    .extract::<String>()
                    .map_err(|_| PyValueError::new_err(format!("messages[{i}]['{k}'] must be a string")))
            };
            msgs.push(ChatMessage::new(field("role")?, field("content")?));
        }
        if msgs.is_empty() {
            return Err(PyValueError::new_err("messages must hold at least one message"));
        }
        chat_prompt(&self.inner.tok, &self.inner.template, &msgs).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn check_fits(&self, ids: &[u32]) -> PyResult<()> {
        if ids.is_empty() {
            return Err(PyValueError::new_err("the prompt is empty (no tokens and no BOS)"));
        }
        if ids.len() >= self.inner.ctx {
            return Err(PyValueError::new_err(format!(
                "the prompt has {} tokens and the context holds {} (pass a larger ctx)",
                ids.len(),
                self.inner.ctx
            )));
        }
        Ok(())
    }

    /// Generates after `ids` with the GIL released; each token re-takes it briefly to see Ctrl-C,
    /// which stops generation and raises KeyboardInterrupt.
    fn run(&self, py: Python<'_>, ids: Vec<u32>, s: &Sampling) -> PyResult<String> {
        self.check_fits(&ids)?;
        let opts = s.options(self.inner.ctx)?;
        let inner = self.inner.clone();
        let (text, interrupted) = py
            .detach(move || -> anyhow::Result<(String, Option<PyErr>)> {
                let mut state = InferenceState::try_new(&inner.model, inner.ctx)?;
                let mut out = String::new();
                let mut interrupted = None;
                generate(&inner.model, &inner.tok, &mut state, &ids, &opts, |_, t| {
                    out.push_str(t);
                    match Python::attach(|py| py.check_signals()) {
                        Ok(()) => true,
                        Err(e) => {
                            interrupted = Some(e);
                            false
                        }
                    }
                })?;
                Ok((out, interrupted))
            })
            .map_err(to_py)?;
        match interrupted {
            Some(e) => Err(e),
            None => Ok(text),
        }
    }
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path=None, threads=None, ctx=None, head_type="file", cache_type="f32", ffn_act=None, chat_template=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        threads: Option<usize>,
        ctx: Option<usize>,
        head_type: &str,
        cache_type: &str,
        ffn_act: Option<&str>,
        chat_template: Option<&str>,
    ) -> PyResult<Self> {
        if let Some(t) = threads {
            if t == 0 {
                return Err(PyValueError::new_err("threads must be at least 1"));
            }
            pool::set_num_threads(t);
        }
        let ffn_act = match ffn_act {
            None => None,
            Some(a) => Some(bitnet_model::FfnActivation::parse(a).ok_or_else(|| {
                PyValueError::new_err(format!("ffn_act: unknown activation '{a}' (expected relu2 or silu)"))
            })?),
        };
        let kv = KvType::parse(cache_type)
            .ok_or_else(|| PyValueError::new_err(format!("cache_type: unknown type '{cache_type}' (f32 or f16)")))?;
        if !matches!(head_type, "file" | "q8_0") {
            return Err(PyValueError::new_err(format!(
                "head_type: unknown type '{head_type}' (file or q8_0)"
            )));
        }
        let q8 = head_type == "q8_0";
        let template_spec = chat_template.map(str::to_string);
        let sandbox = template_sandbox(py);
        let inner = py
            .detach(move || -> anyhow::Result<Inner> {
                let (mut model, tok, source) = match &path {
                    Some(p) if p.to_str().is_some_and(|s| s.starts_with("hf:")) => {
                        let spec = p.to_str().unwrap_or_default();
                        let r = bitnet_hub::ModelRef::parse(spec).unwrap_or_else(|| Err(anyhow!("'{spec}'")))?;
                        let local = bitnet_hub::Hub::from_env().fetch(&r, &mut |_| {})?;
                        let (m, t) = bitnet_model::load(&local, &LoadOptions { ffn_act })?;
                        (m, t, spec.to_string())
                    }
                    Some(p) => {
                        let (m, t) = bitnet_model::load(p, &LoadOptions { ffn_act })?;
                        (m, t, p.display().to_string())
                    }
                    None => {
                        let g = bitnet_gguf::GgufFile::from_bytes(DEMO_MODEL.to_vec(), "demo:bitnet-demo-i2_s.gguf")?;
                        let (m, t) = bitnet_model::load_gguf::from_gguf(&g, ffn_act)?;
                        (m, t, "demo:bitnet-demo-i2_s.gguf".to_string())
                    }
                };
                if q8 {
                    model.requantize_head_q8_0()?;
                }
                model.kv_type = kv;
                let (template, _note) = ChatTemplate::resolve_in(template_spec.as_deref(), &tok, sandbox)?;
                let ctx = ctx.unwrap_or(model.cfg.context_length.min(4096));
                if ctx < 2 {
                    return Err(anyhow!("ctx must be at least 2, got {ctx}"));
                }
                Ok(Inner {
                    model,
                    tok,
                    template,
                    ctx,
                    source,
                })
            })
            .map_err(to_py)?;
        Ok(Model { inner: Arc::new(inner) })
    }

    /// Architecture, sizes, context, SIMD level and thread count.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.inner.model.cfg;
        let d = PyDict::new(py);
        d.set_item("source", &self.inner.source)?;
        d.set_item("architecture", &c.arch)?;
        d.set_item("hidden_size", c.hidden_size)?;
        d.set_item("intermediate_size", c.intermediate_size)?;
        d.set_item("layers", c.num_layers)?;
        d.set_item("heads", c.num_heads)?;
        d.set_item("kv_heads", c.num_kv_heads)?;
        d.set_item("vocab_size", c.vocab_size)?;
        d.set_item("context_length", c.context_length)?;
        d.set_item("ctx", self.inner.ctx)?;
        d.set_item("ffn_activation", c.ffn_act.to_string())?;
        d.set_item("parameters", self.inner.model.param_count() as u64)?;
        d.set_item("simd", bitnet_kernels::simd_level().name())?;
        d.set_item("threads", pool::num_threads())?;
        d.set_item("embedding_model", false)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = &self.inner.model.cfg;
        format!(
            "bitnet.Model('{}', architecture='{}', layers={}, hidden={}, vocab={}, ctx={})",
            self.inner.source, c.arch, c.num_layers, c.hidden_size, c.vocab_size, self.inner.ctx
        )
    }

    /// Token ids of `text` (BOS first when `add_bos` and the model wants one).
    #[pyo3(signature = (text, add_bos=true))]
    fn tokenize(&self, text: &str, add_bos: bool) -> PyResult<Vec<u32>> {
        self.encode(text, add_bos)
    }

    /// The text of `ids`.
    fn detokenize(&self, ids: Vec<u32>) -> PyResult<String> {
        let vocab = self.inner.tok.vocab_size();
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(PyValueError::new_err(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        self.inner
            .tok
            .decode(&ids)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The text generated after `prompt`. Keyword arguments: max_tokens=128, temperature=0.8,
    /// top_k=40, top_p=0.95, min_p=0.05, seed=None, stop=None, repeat_penalty=1.0,
    /// repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0, ignore_eos=False,
    /// add_bos=True (llama.cpp's sampler chain; temperature 0 is greedy).
    #[pyo3(signature = (prompt, **kwargs))]
    fn generate(&self, py: Python<'_>, prompt: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<String> {
        let a = Sampling::from_kwargs("generate", kwargs, 128, &["add_bos", "ignore_eos"])?;
        let ids = self.encode(prompt, a.add_bos)?;
        self.run(py, ids, &a.sampling)
    }

    /// Like `generate` (same keyword arguments), as an iterator of text pieces (each a whole number
    /// of UTF-8 characters).
    #[pyo3(signature = (prompt, **kwargs))]
    fn stream(&self, prompt: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<TokenStream> {
        let a = Sampling::from_kwargs("stream", kwargs, 128, &["add_bos", "ignore_eos"])?;
        let ids = self.encode(prompt, a.add_bos)?;
        self.start_stream(ids, &a.sampling, false)
    }

    /// The assistant's answer to `messages` (a list of {"role", "content"} dicts), rendered with the
    /// model's chat template exactly as `bitnet chat` and the server do. Keyword arguments as
    /// `generate` (max_tokens=256), and stream=True for an iterator of text pieces instead.
    #[pyo3(signature = (messages, **kwargs))]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyList>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let a = Sampling::from_kwargs("chat", kwargs, 256, &["stream"])?;
        let ids = self.chat_ids(messages)?;
        if a.stream {
            Ok(Py::new(py, self.start_stream(ids, &a.sampling, true)?)?.into_any())
        } else {
            // An answer's first token usually carries the space after "Assistant:", as in `bitnet chat`.
            let text = self.run(py, ids, &a.sampling)?;
            Ok(text.trim_start().into_pyobject(py)?.into_any().unbind())
        }
    }

    /// float32 logits of every position of `ids`, shape `[len(ids), vocab]` (no BOS is added).
    fn logits<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyAny>> {
        let vocab = self.inner.model.cfg.vocab_size;
        if ids.is_empty() {
            return Err(PyValueError::new_err("ids is empty"));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(PyValueError::new_err(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let inner = self.inner.clone();
        let n = ids.len();
        let rows = py
            .detach(move || -> anyhow::Result<Vec<f32>> {
                let mut state = InferenceState::try_new(&inner.model, n)?;
                Ok(inner.model.forward(&ids, &mut state, LogitsWanted::All)?.to_vec())
            })
            .map_err(to_py)?;
        let cols = rows.len() / n;
        // The Vec becomes the array's buffer (no copy); reshape makes a view of it.
        let flat = PyArray1::from_vec(py, rows);
        Ok(flat.reshape([n, cols])?.into_any())
    }

    /// Perplexity of `text` with llama-perplexity's method (chunks of `ctx` tokens, each scored on
    /// its second half), as `bitnet perplexity` computes it.
    #[pyo3(signature = (text, ctx=512, batch=512))]
    fn perplexity(&self, py: Python<'_>, text: &str, ctx: usize, batch: usize) -> PyResult<f64> {
        if ctx < 4 || batch == 0 {
            return Err(PyValueError::new_err(format!(
                "ctx must be at least 4 and batch at least 1 (got ctx={ctx}, batch={batch})"
            )));
        }
        let tok = &self.inner.tok;
        let add_bos = tok.add_bos_default();
        let tokens = self.encode(text, true)?;
        let opts = bitnet_tools::perplexity::PplOptions {
            n_ctx: ctx,
            n_batch: batch.min(ctx),
            bos: if add_bos { tok.bos_id() } else { None },
            max_chunks: None,
            quiet: true,
        };
        let inner = self.inner.clone();
        let r = py
            .detach(move || bitnet_tools::perplexity::perplexity(&inner.model, &tokens, &opts, |_, _| {}))
            .map_err(to_py)?;
        Ok(r.ppl)
    }

    /// Embeddings of `texts` (for embedding models; this model generates text).
    fn embed(&self, texts: Vec<String>) -> PyResult<Py<PyAny>> {
        let _ = texts;
        Err(PyNotImplementedError::new_err(format!(
            "{} is a text-generation model ({}); embeddings need an embedding model",
            self.inner.source, self.inner.model.cfg.arch
        )))
    }
}

impl Model {
    /// `trim_start`: drop the answer's leading whitespace (chat answers, as `bitnet chat` shows them).
    fn start_stream(&self, ids: Vec<u32>, s: &Sampling, trim_start: bool) -> PyResult<TokenStream> {
        self.check_fits(&ids)?;
        let opts = s.options(self.inner.ctx)?;
        let decoding = Decoding::new(&self.inner.tok, &opts, &ids);
        let state = InferenceState::try_new(&self.inner.model, self.inner.ctx).map_err(to_py)?;
        Ok(TokenStream {
            run: Mutex::new(StreamRun {
                inner: self.inner.clone(),
                state,
                decoding,
                pending: Some(ids),
                logits: Vec::new(),
                done: false,
                stop: None,
                trim_start,
            }),
        })
    }
}

/// One generation in progress.
struct StreamRun {
    inner: Arc<Inner>,
    state: InferenceState,
    decoding: Decoding,
    /// Tokens to evaluate before the next choice (the prompt, then each new token).
    pending: Option<Vec<u32>>,
    logits: Vec<f32>,
    done: bool,
    stop: Option<StopReason>,
    /// Leading whitespace is still to be dropped.
    trim_start: bool,
}

impl StreamRun {
    /// Evaluates what is pending and decides the next token; returns its text (possibly empty).
    fn step(&mut self) -> anyhow::Result<String> {
        if let Some(ids) = self.pending.take() {
            let l = self.inner.model.forward(&ids, &mut self.state, LogitsWanted::Last)?;
            self.logits.clear();
            self.logits.extend_from_slice(l);
        }
        if self.decoding.exhausted() {
            self.done = true;
            self.stop = Some(StopReason::Length);
            return Ok(self.decoding.flush());
        }
        let context_left = self.state.pos < self.state.cache.capacity();
        let step = self.decoding.step(&self.logits, context_left)?;
        match (step.finished, step.token) {
            (Some(r), _) => {
                self.done = true;
                self.stop = Some(r);
            }
            (None, Some(id)) => self.pending = Some(vec![id]),
            (None, None) => self.done = true,
        }
        if self.trim_start {
            let t = step.text.trim_start();
            if !t.is_empty() {
                self.trim_start = false;
            }
            return Ok(t.to_string());
        }
        Ok(step.text)
    }
}

/// An iterator of text pieces from `Model.stream` or `Model.chat(stream=True)`. Each step releases
/// the GIL while the model computes; Ctrl-C between pieces raises KeyboardInterrupt as usual.
#[pyclass(module = "bitnet")]
struct TokenStream {
    run: Mutex<StreamRun>,
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let out = py.detach(|| -> anyhow::Result<Option<String>> {
                let mut run = self
                    .run
                    .lock()
                    .map_err(|_| anyhow!("a previous step of this stream failed"))?;
                if run.done {
                    return Ok(None);
                }
                Ok(Some(run.step()?))
            });
            match out {
                Err(e) => return Err(PyRuntimeError::new_err(format!("{e:#}"))),
                Ok(None) => return Ok(None),
                Ok(Some(t)) if !t.is_empty() => return Ok(Some(t)),
                // Nothing to show yet (a split UTF-8 character, a possible stop string): go on, but
                // let Ctrl-C through.
                Ok(Some(_)) => py.check_signals()?,
            }
        }
    }

    /// Why the generation ended ("stop", "length" or None while it runs), as OpenAI names it.
    #[getter]
    fn finish_reason(&self) -> Option<&'static str> {
        self.run.lock().ok()?.stop.map(|r| r.openai_name())
    }
}

/// The worker process chat templates render in: this Python running `bitnet._template_worker` (the
/// extension's own worker loop), its memory capped, so that a model's hostile template cannot exhaust
/// the memory of the program that loaded it (see `bitnet_tokenizer::chat_template::sandbox`). `None`
/// (render in this process, with a warning) where no worker starts, or with `BITNET_TEMPLATE_SANDBOX=0`.
fn template_sandbox(py: Python<'_>) -> Option<Arc<Sandbox>> {
    if std::env::var("BITNET_TEMPLATE_SANDBOX").is_ok_and(|v| v == "0") {
        return None;
    }
    let sys = py.import("sys").ok()?;
    let exe: String = sys.getattr("executable").ok()?.extract().ok()?;
    let path: Vec<String> = sys.getattr("path").ok()?.extract().ok()?;
    if exe.is_empty() {
        return None;
    }
    let limits = SandboxLimits::default();
    let sep = if cfg!(windows) { ";" } else { ":" };
    let sandbox = Sandbox::with_env(
        PathBuf::from(exe),
        vec![
            "-m".into(),
            "bitnet._template_worker".into(),
            limits.memory_bytes.to_string(),
        ],
        vec![("PYTHONPATH".into(), path.join(sep))],
        limits,
    );
    match py.detach(|| sandbox.check()) {
        Ok(()) => Some(sandbox),
        Err(e) => {
            eprintln!("warning: chat templates render without a memory cap: {e}");
            None
        }
    }
}

/// The chat-template worker's loop (`python -m bitnet._template_worker BYTES`): caps this process's
/// address space and renders requests from stdin until it closes.
#[pyfunction]
fn _serve_template_worker(py: Python<'_>, memory_bytes: u64) -> PyResult<()> {
    py.detach(|| bitnet_tokenizer::chat_template::sandbox::serve_worker(memory_bytes))
        .map_err(|e| PyOSError::new_err(e.to_string()))
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(_serve_template_worker, m)?)?;
    m.add_class::<TokenStream>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
