"""What the Python layer costs: decode tokens/s of Model.generate against `bitnet generate`, and
Model.logits on a 512-token prompt against `bitnet logits`, same model, same threads, alternating.

    python crates/bitnet-py/bench_overhead.py MODEL.gguf [--bin target/release/bitnet] [-t 2] [-r 3]

Decode speed from Python is (time of 1 + N tokens - time of 1 token) / N, so the prompt's prefill
cancels out; the CLI reports its decode speed itself. `bitnet logits` is timed from its own log
(load time subtracted).
"""

import argparse
import re
import statistics
import subprocess
import tempfile
import time

import bitnet


def cli_decode(bin_, model, threads, n):
    r = subprocess.run(
        [bin_, "generate", "-m", model, "-p", "Once upon a time", "-n", str(n), "--temp", "0", "--ignore-eos",
         "-t", str(threads), "--no-display-prompt"],
        capture_output=True, text=True, check=True)
    return float(re.search(r"generated: \d+ tokens in [\d.]+ s \(([\d.]+) t/s\)", r.stderr).group(1))


def cli_logits(bin_, model, threads, ids):
    with tempfile.NamedTemporaryFile(suffix=".npy") as f:
        t0 = time.perf_counter()
        r = subprocess.run([bin_, "logits", "-m", model, "-t", str(threads), "--tokens", ",".join(map(str, ids)),
                            "-o", f.name], capture_output=True, text=True, check=True)
        total = time.perf_counter() - t0
    load = float(re.search(r"in ([\d.]+) s, \d+ threads", r.stderr).group(1))
    return total - load


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--bin", default="target/release/bitnet")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=64)
    a = ap.parse_args()
    m = bitnet.Model(a.model, threads=a.threads)
    ids = [(i * 7919) % m.info["vocab_size"] for i in range(512)]
    m.generate("warm up", max_tokens=2, temperature=0)
    py_tps, cli_tps, py_lg, cli_lg = [], [], [], []
    for _ in range(a.rounds):
        cli_tps.append(cli_decode(a.bin, a.model, a.threads, a.n + 1))
        t0 = time.perf_counter()
        m.generate("Once upon a time", max_tokens=1, temperature=0, ignore_eos=True)
        t1 = time.perf_counter()
        m.generate("Once upon a time", max_tokens=a.n + 1, temperature=0, ignore_eos=True)
        t2 = time.perf_counter()
        py_tps.append(a.n / ((t2 - t1) - (t1 - t0)))
        cli_lg.append(cli_logits(a.bin, a.model, a.threads, ids))
        t0 = time.perf_counter()
        m.logits(ids)
        py_lg.append(time.perf_counter() - t0)
    med = statistics.median
    print(f"model {a.model}, {a.threads} threads, {a.rounds} alternating rounds, SIMD {m.info['simd']}")
    print(f"decode t/s: bitnet generate {med(cli_tps):.2f}, Model.generate {med(py_tps):.2f} "
          f"(ratio {med(py_tps) / med(cli_tps):.3f}); rounds cli {cli_tps} py {[round(x, 2) for x in py_tps]}")
    print(f"logits of 512 tokens, s: bitnet logits {med(cli_lg):.3f}, Model.logits {med(py_lg):.3f} "
          f"(ratio {med(py_lg) / med(cli_lg):.3f})")


if __name__ == "__main__":
    main()
