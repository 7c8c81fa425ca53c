//! `bitnet chat`: an interactive conversation in the terminal.
//!
//! Streams each answer, keeps the conversation (the KV cache keeps the part of the rendered conversation
//! that did not change, so each turn only evaluates the new tokens), and understands `/clear`, `/regen`,
//! `/system TEXT`, `/exit`. Ctrl-C stops the answer being written, not the program. When stdin is not a
//! terminal it reads one user message per line, so conversations can be scripted and tested.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use bitnet_engine::{chat_prompt, generate, ConversationCache, GenerateOptions, SamplerConfig, StopReason};
use bitnet_model::{BitNetModel, InferenceState};
use bitnet_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

use crate::cmd::generate::SamplingArgs;
use crate::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Most tokens per answer (-1: until the context is full).
    #[arg(
        short = 'n',
        long = "n-predict",
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub n_predict: i64,
    /// Context size (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop an answer when it contains this string (not printed); repeatable.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Chat template: a built-in name (bitnet, llama3, chatml) or a file holding a Jinja template.
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// System prompt to start the conversation with.
    #[arg(long = "system", visible_alias = "sys")]
    pub system: Option<String>,
}

const HELP: &str = "commands: /clear (forget the conversation), /regen (answer the last message again), \
/system TEXT (set the system prompt), /exit; Ctrl-C stops an answer";

/// Set by Ctrl-C while an answer is being written.
static STOP: AtomicBool = AtomicBool::new(false);
static GENERATING: AtomicBool = AtomicBool::new(false);

struct Session {
    model: BitNetModel,
    tok: Tokenizer,
    template: ChatTemplate,
    state: InferenceState,
    /// The tokens whose K/V are in `state` (`state.pos` of them).
    cached: ConversationCache,
    ctx: usize,
    sampler: SamplerConfig,
    n_predict: Option<usize>,
    stop: Vec<String>,
}

impl Session {
    /// Renders the conversation, evaluates what the cache does not already hold, and streams the answer.
    fn answer(&mut self, messages: &[ChatMessage], out: &mut impl Write) -> Result<String> {
        let ids = chat_prompt(&self.tok, &self.template, messages)?;
        if ids.len() >= self.ctx {
            bail!(
                "the conversation has {} tokens and the context holds {}: /clear it (or raise -c)",
                ids.len(),
                self.ctx
            );
        }
        let common = self.cached.reuse(&ids, &mut self.state);
        let room = self.ctx - ids.len();
        let opts = GenerateOptions {
            max_new_tokens: self.n_predict.map_or(room, |n| n.min(room)),
            ignore_eos: false,
            sampler: self.sampler.clone(),
            stop: self.stop.clone(),
        };
        // A fresh random stream per answer, still reproducible from --seed.
        self.sampler.seed = self.sampler.seed.wrapping_add(1);
        let mut reply = String::new();
        STOP.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let r = generate(
            &self.model,
            &self.tok,
            &mut self.state,
            &ids[common..],
            &opts,
            |_, t| {
                // An answer's first token usually carries the space after "Assistant:"; do not show it.
                let t = if reply.is_empty() { t.trim_start() } else { t };
                reply.push_str(t);
                let _ = write!(out, "{t}").and_then(|_| out.flush());
                !STOP.load(Ordering::SeqCst)
            },
        );
        GENERATING.store(false, Ordering::SeqCst);
        let (new, stats) = r?;
        writeln!(out)?;
        self.cached.record(&ids, &new, &self.state);
        let why = match stats.stop {
            StopReason::Cancelled => ", stopped",
            StopReason::Length => ", length limit",
            StopReason::ContextFull => ", context full",
            _ => "",
        };
        eprintln!(
            "[{} tokens, {:.1} tokens/s; prompt {} new tokens in {:.2} s{why}]",
            stats.new_tokens,
            stats.decode_tps(),
            stats.prompt_tokens,
            stats.prefill_secs
        );
        Ok(reply)
    }
}

pub fn run(a: Args) -> Result<()> {
    let seed = a.sampling.seed();
    a.sampling.config(seed, usize::MAX)?; // bad flags fail before loading
    let (model, tok) = a.model.load_language_model("chat")?;
    let sandbox = crate::common::template_sandbox();
    let (template, note) = ChatTemplate::resolve_in(a.chat_template.as_deref(), &tok, sandbox)?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    eprintln!("chat template: {}", template.name());
    let ctx = a.ctx_size.unwrap_or(model.cfg.context_length.min(4096)).max(2);
    let sampler = a.sampling.config(seed, ctx)?;
    let state = InferenceState::try_new(&model, ctx)?;
    let mut s = Session {
        model,
        tok,
        template,
        state,
        cached: ConversationCache::default(),
        ctx,
        sampler,
        n_predict: usize::try_from(a.n_predict).ok(),
        stop: a.stop.clone(),
    };

    let interactive = std::io::stdin().is_terminal();
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            // Not writing an answer: Ctrl-C at the prompt leaves, as in any shell program.
            eprintln!();
            std::process::exit(0);
        }
    })
    .context("installing the Ctrl-C handler")?;
    if interactive {
        eprintln!("{HELP}");
    }
    let system = a.system.clone();
    let mut messages: Vec<ChatMessage> = Vec::new();
    let reset = |m: &mut Vec<ChatMessage>, system: &Option<String>| {
        m.clear();
        if let Some(sys) = system {
            m.push(ChatMessage::new("system", sys.clone()));
        }
    };
    let mut system = system;
    reset(&mut messages, &system);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        // A line ending in '\' continues on the next one.
        let mut input = String::new();
        let mut eof = false;
        loop {
            match lines.next() {
                None => {
                    eof = true;
                    break;
                }
                Some(l) => {
                    let l = l.context("reading stdin")?;
                    match l.strip_suffix('\\') {
                        Some(head) => {
                            input.push_str(head);
                            input.push('\n');
                        }
                        None => {
                            input.push_str(&l);
                            break;
                        }
                    }
                }
            }
        }
        if eof && input.is_empty() {
            break;
        }
        let line = input.trim();
        if line.is_empty() {
            continue;
        }
        let mut out = stdout.lock();
        match line.split_once(' ').map_or((line, ""), |(c, r)| (c, r.trim())) {
            ("/exit" | "/quit", _) => break,
            ("/help", _) => eprintln!("{HELP}"),
            ("/clear", _) => {
                reset(&mut messages, &system);
                eprintln!("[conversation cleared]");
            }
            ("/system", text) => {
                system = (!text.is_empty()).then(|| text.to_string());
                match (messages.first().map(|m| m.role == "system"), &system) {
                    (Some(true), Some(t)) => messages[0].content = t.clone(),
                    (Some(true), None) => {
                        messages.remove(0);
                    }
                    (_, Some(t)) => messages.insert(0, ChatMessage::new("system", t.clone())),
                    (_, None) => {}
                }
                eprintln!("[system prompt {}]", if system.is_some() { "set" } else { "removed" });
            }
            ("/regen", _) => {
                if messages.last().is_some_and(|m| m.role == "assistant") {
                    messages.pop();
                }
                if messages.last().is_none_or(|m| m.role != "user") {
                    eprintln!("[nothing to regenerate]");
                    continue;
                }
                match s.answer(&messages, &mut out) {
                    Ok(reply) => messages.push(ChatMessage::new("assistant", reply)),
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            (cmd, _) if cmd.starts_with('/') && !cmd.contains(char::is_whitespace) && cmd.len() > 1 => {
                eprintln!("unknown command {cmd}; {HELP}");
            }
            _ => {
                messages.push(ChatMessage::new("user", line.to_string()));
                match s.answer(&messages, &mut out) {
                    Ok(reply) => messages.push(ChatMessage::new("assistant", reply)),
                    Err(e) => {
                        messages.pop();
                        eprintln!("error: {e:#}");
                    }
                }
            }
        }
        if eof {
            break;
        }
    }
    Ok(())
}
