//! Chat templates that try to exhaust memory: `bitnet chat` and `bitnet serve` answer that request
//! with an error naming the limit and go on serving (they render in a memory-capped worker process).
//!
//! Every process here runs under `prlimit --as` (8 GiB), so that a regression (rendering in the
//! server's own process) fails the test with an abort instead of taking the machine's memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const AS_LIMIT: &str = "--as=8589934592";

mod common;

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a/gguf/bitnet-b158-i2_s.gguf")
        .display()
        .to_string()
}

/// Each way a few bytes of Jinja can ask for unbounded memory, armed only when the last message
/// says "boom" (so the template passes the load-time check and trips on a request).
const HOSTILE: [(&str, &str); 4] = [
    (
        "string doubling",
        "{%- set ns = namespace(s='0123456789abcdef') -%}{%- for i in range(60) -%}{%- set ns.s = ns.s ~ ns.s -%}{%- endfor -%}",
    ),
    (
        "list doubling",
        "{%- set ns = namespace(l=[1, 2, 3, 4]) -%}{%- for i in range(60) -%}{%- set ns.l = ns.l + ns.l -%}{%- endfor -%}",
    ),
    (
        "captured block output",
        "{%- set ns = namespace(s='0123456789abcdef') -%}{%- for i in range(60) -%}{%- set c -%}{{ ns.s }}{{ ns.s }}{%- endset -%}{%- set ns.s = c -%}{%- endfor -%}",
    ),
    (
        "repeated large repetition",
        "{%- set ns = namespace(s='') -%}{%- for i in range(200) -%}{%- set ns.s = ns.s ~ ('x' * 90000000) -%}{%- endfor -%}",
    ),
];

fn template(arm: &str, always: bool) -> String {
    let guard = if always {
        "true".to_string()
    } else {
        "'boom' in messages[-1].content".to_string()
    };
    format!(
        "{{%- if {guard} -%}}{arm}{{%- endif -%}}{{%- for m in messages -%}}{{{{ m.role }}}}: {{{{ m.content }}}}\n{{%- endfor -%}}{{%- if add_generation_prompt %}}assistant: {{% endif -%}}"
    )
}

fn write_template(name: &str, src: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-sandbox-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, src).unwrap();
    p
}

fn bitnet_limited(args: &[&str]) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(AS_LIMIT).arg(env!("CARGO_BIN_EXE_bitnet")).args(args);
    c
}

fn chat(template: &Path, input: &str) -> Output {
    let mut child = bitnet_limited(&[
        "chat",
        "-m",
        &model(),
        "--temp",
        "0",
        "-n",
        "4",
        "--chat-template",
        template.to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("prlimit (util-linux) runs bitnet");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_answers_a_memory_bomb_with_an_error_and_goes_on() {
    for (i, (what, arm)) in HOSTILE.iter().enumerate() {
        let t = write_template(&format!("armed-{i}.jinja"), &template(arm, false));
        let o = chat(&t, "boom\nhello\n");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{what}: {:?}\n{err}", o.status);
        assert!(
            err.contains("error: chat template") && err.contains("MiB"),
            "{what}: the failed turn names the memory limit:\n{err}"
        );
        // The next turn is answered: one generation summary line.
        assert_eq!(err.matches("tokens/s").count(), 1, "{what}:\n{err}");
    }
}

#[test]
fn a_template_that_fails_its_load_check_is_refused_at_start() {
    let t = write_template("always.jinja", &template(HOSTILE[0].1, true));
    let o = chat(&t, "hello\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "a clean error exit, not an abort:\n{err}");
    assert!(err.contains("memory limit of 1024 MiB"), "{err}");
}

#[test]
fn serve_answers_a_memory_bomb_with_an_error_and_stays_up() {
    let t = write_template("serve.jinja", &template(HOSTILE[0].1, false));
    let mut child = bitnet_limited(&[
        "serve",
        "-m",
        &model(),
        "--port",
        "0",
        "--chat-template",
        t.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (addr, _lines) = common::wait_until_loaded(child.stderr.take().unwrap());
    let chat = |content: &str| {
        let req =
            serde_json::json!({"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0});
        common::http(&addr, "POST", "/v1/chat/completions", &req.to_string())
    };
    for _ in 0..3 {
        let (s, body) = chat("boom");
        assert!((400..600).contains(&s), "{s} {body}");
        assert!(body.contains("MiB"), "the error names the memory limit: {body}");
        let (s, body) = common::http(&addr, "GET", "/health", "");
        assert_eq!(s, 200, "{body}");
        let (s, body) = chat("hello");
        assert_eq!(s, 200, "{body}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
