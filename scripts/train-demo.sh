#!/usr/bin/env bash
# Reproduces models/bitnet-demo-i2_s.gguf (and models/bitnet-demo-loss.svg): the synthetic corpus (12000
# documents, seed 1), a byte-level BPE tokenizer (1024 entries) and a small BitNet b1.58 model (hidden 128,
# FFN 384, 4 layers, 4/2 heads, context 256) trained from scratch for 240 steps of 16 x 128 tokens on CPU.
# Deterministic from the seeds (same machine and thread count give the same loss trajectory).
# It runs the same pipeline as `bitnet train` (crates/bitnet-train/examples/train_demo.rs); the equivalent
# command line is:
#   bitnet train --gen-corpus corpus.txt --gen-docs 12000 --seed 1
#   bitnet train corpus.txt -o ckpt --vocab-size 1024 --hidden 128 --ffn 384 --layers 4 --heads 4 \
#     --kv-heads 2 --context 256 --seq 128 --batch 16 --steps 240 --lr 4e-3 --warmup 30 --val-every 50 \
#     --save-every 50 --seed 1 --plot models/bitnet-demo-loss.svg --gguf models/bitnet-demo-i2_s.gguf
# Interrupted? Run again with RESUME=1 to continue from the last checkpoint.
#
# Usage: scripts/train-demo.sh [work-dir] [steps]   (default: target/demo-train 240)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
cargo run --release -p bitnet-train --example train_demo -- "${1:-target/demo-train}" "${2:-240}"
ls -l models/
