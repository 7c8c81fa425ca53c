//! Rendering chat templates in a worker process whose memory is capped by the operating system.
//!
//! A chat template is code from a model file. minijinja bounds its instructions (fuel), recursion and
//! our filters bound widths, but nothing inside one process can bound what a template allocates: a
//! string that doubles itself in a loop (`{% set ns.s = ns.s ~ ns.s %}`), a `{% set %}` block or a
//! macro that captures a growing output, a list concatenated with itself. Each step is a single
//! instruction; forty of them ask for a terabyte, and a failed allocation aborts the whole process,
//! taking every other request with it.
//!
//! So `bitnet chat` and `bitnet serve` render in a child process (the `bitnet` binary started as
//! `bitnet __chat-template-worker`) that caps its own address space at start (`RLIMIT_AS`,
//! [`SandboxLimits::memory_bytes`]). A template that runs away kills only the worker; the request gets
//! an error naming the limit, and the next render starts a new worker. The wall-clock limit
//! ([`SandboxLimits::timeout`]) covers what fuel does not (one huge instruction).
//!
//! Protocol, on the worker's stdin/stdout: frames of a little-endian `u32` length and that many bytes
//! of JSON ([`WorkerRequest`] in, [`WorkerReply`] out). One worker renders one request at a time; a
//! render costs one round trip through two pipes (tens of microseconds) on top of the render itself.

use std::io::{BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ChatMessage, ChatTemplate, ChatTemplateError, RenderLimits};

/// The hidden subcommand that starts a worker.
pub const WORKER_SUBCOMMAND: &str = "__chat-template-worker";

/// Largest frame either side accepts: a conversation (bounded by the server's body limit) or a
/// rendered prompt (bounded by [`RenderLimits::max_output_bytes`]) with room to spare.
const MAX_FRAME: usize = 256 << 20;

/// Bounds on the worker process.
#[derive(Clone, Copy, Debug)]
pub struct SandboxLimits {
    /// Address space of the worker (`RLIMIT_AS`): the binary, its stack and heap. 1 GiB leaves a
    /// template hundreds of MiB of working memory (real templates use well under 1 MiB) and keeps
    /// a runaway one far from the machine's memory.
    pub memory_bytes: u64,
    /// Longest a render may take before the worker is killed.
    pub timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 1 << 30,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A render request sent to the worker.
#[derive(Serialize, Deserialize)]
pub struct WorkerRequest {
    pub name: String,
    pub source: String,
    pub messages: Vec<ChatMessage>,
    pub add_generation_prompt: bool,
    pub bos_token: String,
    pub eos_token: String,
    pub fuel: u64,
    pub max_output_bytes: usize,
}

/// The worker's answer.
#[derive(Serialize, Deserialize)]
pub enum WorkerReply {
    Ok(String),
    Invalid(String),
    Render(String),
    TooLong(usize),
}

/// Starts workers and sends them renders; shared by every [`ChatTemplate`] of a process.
pub struct Sandbox {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    limits: SandboxLimits,
    worker: Mutex<Option<Worker>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("program", &self.program)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<std::io::Result<Vec<u8>>>,
    /// What the worker wrote to stderr (its end), complete once `stderr_done` is joined.
    stderr: Arc<Mutex<String>>,
    stderr_done: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    /// Workers are `program args...` (for `bitnet`: its own executable and [`WORKER_SUBCOMMAND`]);
    /// the program must call [`serve_worker`] with `limits.memory_bytes`.
    pub fn new(program: PathBuf, args: Vec<String>, limits: SandboxLimits) -> Arc<Sandbox> {
        Self::with_env(program, args, Vec::new(), limits)
    }

    /// [`Sandbox::new`], with environment variables set for the worker (Python's `PYTHONPATH`).
    pub fn with_env(
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        limits: SandboxLimits,
    ) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            program,
            args,
            env,
            limits,
            worker: Mutex::new(None),
        })
    }

    /// Renders a trivial template in a worker: whether workers start and answer here.
    pub fn check(&self) -> Result<(), ChatTemplateError> {
        let out = self.render(&WorkerRequest {
            name: "worker check".into(),
            source: "{{ messages[0].content }}".into(),
            messages: vec![ChatMessage::new("user", "ok")],
            add_generation_prompt: false,
            bos_token: String::new(),
            eos_token: String::new(),
            fuel: 1000,
            max_output_bytes: 64,
        })?;
        if out == "ok" {
            Ok(())
        } else {
            Err(ChatTemplateError::Render {
                name: "worker check".into(),
                message: format!("the template worker answered {out:?} instead of \"ok\""),
            })
        }
    }

    /// The running executable as its own worker (`bitnet` binaries); `None` where it cannot be found.
    pub fn this_executable(limits: SandboxLimits) -> Option<Arc<Sandbox>> {
        let exe = std::env::current_exe().ok()?;
        let mut args = vec![WORKER_SUBCOMMAND.to_string()];
        args.push(limits.memory_bytes.to_string());
        Some(Sandbox::new(exe, args, limits))
    }

    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // A failed allocation prints one line; a backtrace would bury it.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(mut err)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(std::io::Error::other("the worker's pipes were not opened"));
        };
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("chat-template-reader".into())
            .spawn(move || {
                let mut r = BufReader::new(stdout);
                loop {
                    let frame = read_frame(&mut r);
                    let end = !matches!(frame, Ok(Some(_)));
                    let sent = match frame {
                        Ok(Some(f)) => tx.send(Ok(f)),
                        Ok(None) => break,
                        Err(e) => tx.send(Err(e)),
                    };
                    if end || sent.is_err() {
                        break;
                    }
                }
            })?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_done = std::thread::Builder::new()
            .name("chat-template-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Keep the start (the reason comes first) and stop collecting past it.
                    if s.len() > 4096 {
                        let cut = (0..=4096).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                        s.truncate(cut);
                    }
                }
            })?;
        Ok(Worker {
            child,
            stdin,
            replies,
            stderr,
            stderr_done: Some(stderr_done),
        })
    }

    /// Renders `req` in a worker (started on first use, and again after one dies).
    pub(super) fn render(&self, req: &WorkerRequest) -> Result<String, ChatTemplateError> {
        let err = |message: String| ChatTemplateError::Render {
            name: req.name.clone(),
            message,
        };
        let frame = serde_json::to_vec(req).map_err(|e| err(format!("encoding the render request: {e}")))?;
        let mut slot = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        // A worker that died since its last render (killed from outside) fails the write: start a
        // new one and send again. A worker that dies *during* a render is not retried: the same
        // render would kill the next one too.
        let mut sent = false;
        for _ in 0..2 {
            if slot.is_none() {
                let w = self.spawn().map_err(|e| {
                    err(format!(
                        "could not start the template worker {} {}: {e}",
                        self.program.display(),
                        self.args.join(" ")
                    ))
                })?;
                *slot = Some(w);
            }
            let Some(w) = slot.as_mut() else { continue };
            if write_frame(&mut w.stdin, &frame).is_ok() {
                sent = true;
                break;
            }
            *slot = None;
        }
        if !sent {
            return Err(err("the template worker does not accept requests".into()));
        }
        let Some(w) = slot.as_mut() else {
            return Err(err("the template worker is gone".into()));
        };
        let reply = match w.replies.recv_timeout(self.limits.timeout) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                *slot = None;
                return Err(err(format!("reading the template worker's answer: {e}")));
            }
            Err(RecvTimeoutError::Timeout) => {
                *slot = None;
                return Err(err(format!(
                    "rendering took longer than {} s (the worker was stopped)",
                    self.limits.timeout.as_secs_f64()
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = w.child.wait().ok();
                // The child has exited: its stderr ends, so the reader finishes.
                if let Some(h) = w.stderr_done.take() {
                    let _ = h.join();
                }
                let said = w.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default();
                *slot = None;
                let mib = self.limits.memory_bytes >> 20;
                let why = if said.contains("memory allocation") || said.contains("allocation failed") {
                    format!("the template asked for more than the template worker's memory limit of {mib} MiB")
                } else {
                    let how = status.map_or("an unknown status".to_string(), |s| s.to_string());
                    format!("the template worker stopped ({how}; its memory limit is {mib} MiB)")
                };
                let said = said
                    .lines()
                    .find(|l| l.contains("memory allocation"))
                    .or_else(|| said.lines().last())
                    .unwrap_or("");
                return Err(err(if said.is_empty() { why } else { format!("{why}: {said}") }));
            }
        };
        match serde_json::from_slice::<WorkerReply>(&reply) {
            Ok(WorkerReply::Ok(s)) => Ok(s),
            Ok(WorkerReply::Render(message)) => Err(err(message)),
            Ok(WorkerReply::Invalid(message)) => Err(ChatTemplateError::Invalid {
                name: req.name.clone(),
                message,
            }),
            Ok(WorkerReply::TooLong(limit)) => Err(ChatTemplateError::TooLong {
                name: req.name.clone(),
                limit,
            }),
            Err(e) => {
                *slot = None;
                Err(err(format!("the template worker answered nonsense: {e}")))
            }
        }
    }
}

fn write_frame(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let n = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other(format!("a frame of {} bytes is over the limit", bytes.len())))?;
    w.write_all(&n.to_le_bytes())?;
    w.write_all(bytes)?;
    w.flush()
}

/// One frame, or `None` at a clean end of stream.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {n} bytes is over the limit of {MAX_FRAME}"
        )));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// The worker's main loop: caps this process's address space at `memory_bytes`, then renders each
/// request from stdin and answers on stdout until stdin closes. The last template parsed is kept, as
/// a server renders the same one every time.
pub fn serve_worker(memory_bytes: u64) -> std::io::Result<()> {
    cap_address_space(memory_bytes)?;
    serve(std::io::stdin().lock(), std::io::stdout().lock())
}

/// Answers every request frame of `input` on `output`, until `input` ends.
fn serve(mut input: impl Read, mut output: impl Write) -> std::io::Result<()> {
    let mut cached: Option<(String, ChatTemplate)> = None;
    while let Some(frame) = read_frame(&mut input)? {
        let reply = match serde_json::from_slice::<WorkerRequest>(&frame) {
            Err(e) => WorkerReply::Render(format!("a malformed render request: {e}")),
            Ok(req) => render_here(&mut cached, req),
        };
        let bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        write_frame(&mut output, &bytes)?;
    }
    Ok(())
}

fn render_here(cached: &mut Option<(String, ChatTemplate)>, req: WorkerRequest) -> WorkerReply {
    if cached
        .as_ref()
        .is_none_or(|(src, t)| *src != req.source || t.name() != req.name)
    {
        *cached = None;
        match ChatTemplate::new(&req.name, &req.source) {
            Ok(t) => *cached = Some((req.source.clone(), t)),
            Err(e) => return WorkerReply::Invalid(e.to_string()),
        }
    }
    let Some((_, t)) = cached.as_mut() else {
        return WorkerReply::Render("no template".into());
    };
    t.set_limits(RenderLimits {
        fuel: req.fuel,
        max_output_bytes: req.max_output_bytes,
    });
    match t.render_in_process(&req.messages, req.add_generation_prompt, &req.bos_token, &req.eos_token) {
        Ok(s) => WorkerReply::Ok(s),
        Err(ChatTemplateError::TooLong { limit, .. }) => WorkerReply::TooLong(limit),
        Err(ChatTemplateError::Invalid { message, .. }) => WorkerReply::Invalid(message),
        Err(ChatTemplateError::Render { message, .. }) => WorkerReply::Render(message),
        Err(e) => WorkerReply::Render(e.to_string()),
    }
}

#[cfg(unix)]
fn cap_address_space(bytes: u64) -> std::io::Result<()> {
    rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes)
}

#[cfg(not(unix))]
fn cap_address_space(_bytes: u64) -> std::io::Result<()> {
    // No RLIMIT_AS here: the worker still keeps a runaway template out of the main process.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(source: &str, content: &str) -> WorkerRequest {
        WorkerRequest {
            name: "t".into(),
            source: source.into(),
            messages: vec![ChatMessage::new("user", content)],
            add_generation_prompt: true,
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            fuel: 100_000,
            max_output_bytes: 64,
        }
    }

    /// The worker loop over in-memory pipes: each request gets its answer, in order, and a
    /// malformed frame gets an error answer instead of ending the worker.
    #[test]
    fn worker_answers_each_request_in_order() {
        let mut input = Vec::new();
        for req in [
            request("{{ bos_token }}{{ messages[0].content }}", "hi"),
            request("{{ messages[0].content * 100 }}", "long"),
            request("{% for %}", "x"),
            request("{{ raise_exception('no') }}", "x"),
        ] {
            write_frame(&mut input, &serde_json::to_vec(&req).unwrap()).unwrap();
        }
        write_frame(&mut input, b"not json").unwrap();
        let mut output = Vec::new();
        serve(&input[..], &mut output).unwrap();
        let mut r = &output[..];
        let mut replies = Vec::new();
        while let Some(f) = read_frame(&mut r).unwrap() {
            replies.push(serde_json::from_slice::<WorkerReply>(&f).unwrap());
        }
        assert_eq!(replies.len(), 5);
        assert!(matches!(&replies[0], WorkerReply::Ok(s) if s == "<s>hi"));
        assert!(matches!(replies[1], WorkerReply::TooLong(64)));
        assert!(matches!(replies[2], WorkerReply::Invalid(_)));
        assert!(matches!(&replies[3], WorkerReply::Render(m) if m.contains("no")));
        assert!(matches!(&replies[4], WorkerReply::Render(m) if m.contains("malformed")));
    }

    #[test]
    fn frames_over_the_limit_are_refused_before_allocating() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"xx");
        let e = read_frame(&mut &bytes[..]).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
        // A stream cut inside a frame is an error; one cut between frames is a clean end.
        let mut cut = 10u32.to_le_bytes().to_vec();
        cut.extend_from_slice(b"abc");
        assert!(read_frame(&mut &cut[..]).is_err());
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
    }

    /// A worker program that does not exist, or dies at once, gives an error for the render (and a
    /// new worker is tried on the next one), never a panic or a hang.
    #[test]
    fn a_missing_or_dying_worker_is_an_error() {
        let t = ChatTemplate::new("t", "{{ messages[0].content }}").unwrap();
        let missing = Sandbox::new("/nonexistent/bitnet".into(), vec![], SandboxLimits::default());
        let t = t.with_sandbox(Some(missing));
        let e = t.render(&[ChatMessage::new("user", "hi")], true, "", "").unwrap_err();
        assert!(e.to_string().contains("could not start the template worker"), "{e}");
        #[cfg(unix)]
        {
            let dies = Sandbox::new(
                "/bin/sh".into(),
                vec!["-c".into(), "exit 3".into()],
                SandboxLimits::default(),
            );
            let t = t.with_sandbox(Some(dies));
            for _ in 0..2 {
                let e = t.render(&[ChatMessage::new("user", "hi")], true, "", "").unwrap_err();
                assert!(e.to_string().contains("template worker"), "{e}");
            }
            let slow = Sandbox::new(
                "/bin/sh".into(),
                vec!["-c".into(), "sleep 30".into()],
                SandboxLimits {
                    memory_bytes: 1 << 30,
                    timeout: Duration::from_millis(200),
                },
            );
            let t = t.with_sandbox(Some(slow));
            let e = t.render(&[ChatMessage::new("user", "hi")], true, "", "").unwrap_err();
            assert!(e.to_string().contains("longer than 0.2 s"), "{e}");
        }
    }
}
