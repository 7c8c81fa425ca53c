//! `bitnet chat` fed from a pipe and `bitnet serve` talked to over HTTP, both checked against
//! `bitnet generate --temp 0` on the fixture model.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a/gguf/bitnet-b158-i2_s.gguf")
        .display()
        .to_string()
}

/// `bitnet generate --temp 0 --no-display-prompt`: the continuation alone.
fn generate(prompt: &str, n: usize, extra: &[&str]) -> String {
    let (n, m) = (n.to_string(), model());
    let mut args = vec![
        "generate",
        "-m",
        &m,
        "-p",
        prompt,
        "--temp",
        "0",
        "-n",
        &n,
        "--no-display-prompt",
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_bitnet")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    out.strip_suffix('\n').unwrap_or(&out).to_string()
}

/// Runs `bitnet chat ARGS` with `input` on a piped stdin; asserts success; returns (stdout, stderr).
fn chat_piped(args: &[&str], input: &[u8]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{err}");
    (out, err)
}

#[test]
fn chat_from_a_pipe_keeps_the_conversation_and_obeys_commands() {
    // The turn "hello" rendered by the fixture's template is exactly this prompt (BOS from the template).
    let a = generate("<|begin_of_text|>User: hello<|eot_id|>Assistant: ", 12, &["--no-bos"]);
    // chat does not show the whitespace an answer starts with.
    let a = a.trim_start();
    let (out, err) = chat_piped(
        &["-m", &model(), "--temp", "0", "-n", "12"],
        b"hello\n/regen\n/clear\nhello\n/system Be brief.\nsecond \\\nline\n/bogus\n/exit\nnever sent\n",
    );
    let three = format!("{a}\n{a}\n{a}\n");
    assert!(out.starts_with(&three), "chat answers {out:?} vs generate {a:?}");
    assert!(out.len() > three.len(), "the fourth turn was answered: {out:?}");
    assert_eq!(err.matches("tokens/s").count(), 4, "{err}");
    assert!(err.contains("unknown command /bogus"), "{err}");
    assert!(
        err.contains("[conversation cleared]") && err.contains("[system prompt set]"),
        "{err}"
    );
}

/// The built-in demo model (no -m) answers a question of its corpus with a sentence of its corpus: its
/// template ends at "Assistant:" (the answer's first token carries the space), and the answer stops at
/// end-of-turn without showing it.
#[test]
fn demo_model_answers_in_chat() {
    let (out, _) = chat_piped(&["--temp", "0", "-n", "40"], b"Where does a cow live?\n");
    let answer = out.lines().next().unwrap_or_default();
    assert!(answer.starts_with("A cow lives"), "{out:?}");
    assert!(answer.ends_with('.') && !out.contains("<|eot_id|>"), "{out:?}");
}

#[test]
fn bitnetcpp_template_is_replaced_in_chat() {
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-a/gguf/bitnetcpp-i2_s.gguf");
    let (_, err) = chat_piped(&["-m", m.to_str().unwrap(), "--temp", "0", "-n", "4"], b"hi\n");
    assert!(
        err.contains("BITNETAssistant") && err.contains("bitnet (built-in)"),
        "{err}"
    );
}

#[test]
fn serve_greedy_equals_generate_and_sigterm_exits_cleanly() {
    let prompt = "The café in Zürich opened at";
    let want = generate(prompt, 16, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(["serve", "-m", &model(), "--port", "0", "--alias", "tiny"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, lines) = common::wait_until_loaded(child.stderr.take().unwrap());
    let (s, body) = common::http(&addr, "GET", "/health", "");
    assert_eq!(s, 200, "{body}");
    let req = serde_json::json!({"model": "tiny", "prompt": prompt, "max_tokens": 16, "temperature": 0});
    let (s, body) = common::http(&addr, "POST", "/v1/completions", &req.to_string());
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), want);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}
