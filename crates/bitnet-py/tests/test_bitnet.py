"""The Python package against the `bitnet` binary, on the repository's own models.

The CLI is `$BITNET_BIN`, else target/release/bitnet or target/debug/bitnet (what `cargo test
--workspace` builds); `.ci/run` builds the wheel and runs these after the Rust tests.
"""

import _thread
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bitnet

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "models" / "bitnet-demo-i2_s.gguf"
TINY = ROOT / "tests" / "fixtures" / "tiny-a"
TINY_I2S = TINY / "gguf" / "bitnet-b158-i2_s.gguf"


def cli() -> Path:
    env = os.environ.get("BITNET_BIN")
    candidates = [Path(env)] if env else [ROOT / "target" / "release" / "bitnet", ROOT / "target" / "debug" / "bitnet"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"no bitnet binary at {candidates}: run `cargo build -p bitnet-cli` or set BITNET_BIN")


def run_cli(*args: str) -> str:
    r = subprocess.run([str(cli()), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def demo():
    return bitnet.Model(str(DEMO))


@pytest.fixture(scope="module")
def tiny():
    return bitnet.Model(TINY_I2S, ctx=4096)


def test_info_and_builtin_demo(demo):
    info = demo.info
    assert info["architecture"] == "bitnet-b1.58"
    assert info["vocab_size"] == 841 and info["layers"] == 5 and info["ctx"] == 256
    assert info["simd"] and info["threads"] >= 1
    builtin = bitnet.Model()
    assert builtin.info["source"].startswith("demo:")
    assert builtin.tokenize("Once upon a time") == demo.tokenize("Once upon a time")
    assert "bitnet.Model(" in repr(demo)


def test_tokenize_round_trip_and_cli(demo):
    text = "Once upon a time, there was a cat."
    ids = demo.tokenize(text)
    assert ids == json.loads(run_cli("tokenize", "-m", str(DEMO), text))
    assert demo.detokenize(ids[1:]) == text
    assert demo.tokenize(text, add_bos=False) == ids[1:]


def test_logits_equal_cli_bit_for_bit(tiny, tmp_path):
    ids = tiny.tokenize("The capital of France is")
    got = tiny.logits(ids)
    assert got.dtype == np.float32 and got.shape == (len(ids), tiny.info["vocab_size"])
    out = tmp_path / "l.npy"
    run_cli("logits", "-m", str(TINY_I2S), "--tokens", ",".join(map(str, ids)), "-o", str(out))
    want = np.load(out)
    assert want.shape == got.shape
    assert np.array_equal(want.view(np.uint32), got.view(np.uint32))


def test_greedy_text_equals_cli(demo):
    prompt = "Once upon a time"
    want = run_cli("generate", "-m", str(DEMO), "-p", prompt, "-n", "40", "--temp", "0", "--no-display-prompt")
    got = demo.generate(prompt, max_tokens=40, temperature=0)
    assert got == want.rstrip("\n")
    assert len(got) > 20


def test_stream_pieces_concatenate_to_generate(demo):
    for kw in [dict(temperature=0), dict(temperature=0.9, seed=7)]:
        whole = demo.generate("Lily saw a dog", max_tokens=48, **kw)
        s = demo.stream("Lily saw a dog", max_tokens=48, **kw)
        pieces = list(s)
        assert "".join(pieces) == whole
        assert all(pieces), "no empty pieces"
        assert s.finish_reason in ("stop", "length")
    # Same seed, same text; stop strings end the text before them.
    assert demo.generate("Tom", max_tokens=30, seed=3) == demo.generate("Tom", max_tokens=30, seed=3)
    full = demo.generate("Once upon a time", max_tokens=40, temperature=0)
    cut = demo.generate("Once upon a time", max_tokens=40, temperature=0, stop=["Lily"])
    assert "Lily" in full and "Lily" not in cut and full.startswith(cut)


def test_chat_uses_the_template_and_streams(demo):
    msgs = [{"role": "user", "content": "Where does a cow live?"}]
    answer = demo.chat(msgs, temperature=0, max_tokens=24)
    assert isinstance(answer, str) and answer and not answer[0].isspace()
    assert "".join(demo.chat(msgs, temperature=0, max_tokens=24, stream=True)) == answer


def test_perplexity_equals_cli(tiny):
    text_file = TINY / "reference" / "text.txt"
    want = json.loads(run_cli("perplexity", "-m", str(TINY_I2S), "-f", str(text_file), "-c", "64", "--json").splitlines()[-1])
    got = tiny.perplexity(text_file.read_text(), ctx=64, batch=64)
    assert got == pytest.approx(want["ppl"], rel=1e-12)
    ref = json.loads((TINY / "reference" / "perplexity.json").read_text())["hf"]["packed"]["ppl"]
    assert got == pytest.approx(ref, rel=0.01), "within 1% of transformers"


def test_gil_is_released_while_generating(tiny):
    window = []

    def work():
        t0 = time.perf_counter()
        tiny.generate("Hello", max_tokens=400, ignore_eos=True, temperature=0)
        window.extend([t0, time.perf_counter()])

    t = threading.Thread(target=work)
    t.start()
    ticks = []
    i = 0
    while t.is_alive():
        i += 1
        if i % 64 == 0:
            ticks.append(time.perf_counter())
    t.join()
    t0, t1 = window
    assert t1 - t0 > 0.05, f"generation too short to tell ({t1 - t0:.3f} s)"
    # Holding the GIL for the whole call would leave this thread no step inside the call: count the
    # steps in its middle half.
    lo, hi = t0 + (t1 - t0) / 4, t1 - (t1 - t0) / 4
    inside = sum(lo <= x <= hi for x in ticks)
    assert inside > 100, f"the main thread ran {inside * 64} steps in the middle of a {t1 - t0:.2f} s call"


def test_threads_share_a_model(demo):
    want = demo.generate("Once upon a time", max_tokens=32, temperature=0)
    got = [None] * 4

    def work(i):
        got[i] = demo.generate("Once upon a time", max_tokens=32, temperature=0)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got == [want] * 4


def test_ctrl_c_stops_generation(tiny):
    timer = threading.Timer(0.2, _thread.interrupt_main)
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        tiny.generate("Hello", max_tokens=4000, ignore_eos=True, temperature=0)
    assert time.perf_counter() - t0 < 3.0
    timer.cancel()
    # The model is still usable.
    assert tiny.generate("Hello", max_tokens=4, temperature=0) is not None


def test_bad_paths_raise_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        bitnet.Model(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(ValueError, match="bad.gguf"):
        bitnet.Model(bad)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError):
        bitnet.Model(garbage)


def test_bad_arguments_raise_valueerror(demo):
    with pytest.raises(ValueError, match="threads"):
        bitnet.Model(DEMO, threads=0)
    with pytest.raises(ValueError, match="cache_type"):
        bitnet.Model(DEMO, cache_type="f8")
    with pytest.raises(ValueError, match="head_type"):
        bitnet.Model(DEMO, head_type="q4")
    with pytest.raises(ValueError, match="temp"):
        demo.generate("x", temperature=float("nan"))
    with pytest.raises(ValueError, match="top-p"):
        demo.generate("x", top_p=1.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        demo.logits([1, 5000])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        demo.detokenize([99999])
    with pytest.raises(ValueError, match="context"):
        demo.generate("word " * 400)
    with pytest.raises(ValueError, match="messages"):
        demo.chat([{"role": "user"}])
    with pytest.raises(ValueError):
        demo.chat([])
    with pytest.raises(ValueError):
        demo.perplexity("short", ctx=2)
    with pytest.raises(ValueError):
        demo.logits([])
    with pytest.raises(TypeError):
        demo.generate(42)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temp'"):
        demo.generate("x", temp=0)
    with pytest.raises(TypeError, match="max_tokens"):
        demo.generate("x", max_tokens="many")
    with pytest.raises(TypeError, match="add_bos"):
        demo.chat([{"role": "user", "content": "hi"}], add_bos=False)
    with pytest.raises(NotImplementedError, match="embedding"):
        demo.embed(["a"])


def test_hf_reference_from_the_cache(tmp_path, monkeypatch):
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "models--tester--bitnet-tiny-gguf"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    etag = "ab" * 32
    (repo / "blobs" / etag).write_bytes(TINY_I2S.read_bytes())
    os.symlink(f"../../blobs/{etag}", repo / "snapshots" / commit / "ggml-model-i2_s.gguf")
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = bitnet.Model("hf:tester/bitnet-tiny-gguf")
    assert m.info["source"] == "hf:tester/bitnet-tiny-gguf"
    ids = m.tokenize("Hello")
    assert np.array_equal(m.logits(ids), bitnet.Model(TINY_I2S).logits(ids))
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        bitnet.Model("hf:tester/missing")


def test_a_template_that_exhausts_memory_fails_its_call_only(tmp_path):
    """The model's chat template renders in a memory-capped worker: a template that doubles a string in a
    loop (armed by the word 'boom') fails that call with an error naming the limit, and the next call works.
    Run under `prlimit --as` so that a regression aborts the child instead of exhausting the machine."""
    template = tmp_path / "bomb.jinja"
    template.write_text(
        "{%- if 'boom' in messages[-1].content -%}{%- set ns = namespace(s='0123456789abcdef') -%}"
        "{%- for i in range(60) -%}{%- set ns.s = ns.s ~ ns.s -%}{%- endfor -%}{%- endif -%}"
        "{%- for m in messages -%}{{ m.role }}: {{ m.content }}\n{%- endfor -%}assistant: "
    )
    code = f"""
import bitnet
m = bitnet.Model({str(TINY_I2S)!r}, chat_template={str(template)!r})
try:
    m.chat([{{"role": "user", "content": "boom"}}], max_tokens=2, temperature=0)
    print("NO ERROR")
except Exception as e:
    print("ERROR", type(e).__name__, e)
print("NEXT", bool(m.chat([{{"role": "user", "content": "hello"}}], max_tokens=2, temperature=0)))
"""
    r = subprocess.run(
        ["prlimit", "--as=8589934592", sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "ERROR" in r.stdout and "memory limit of 1024 MiB" in r.stdout, r.stdout + r.stderr
    assert "NEXT True" in r.stdout, r.stdout + r.stderr
