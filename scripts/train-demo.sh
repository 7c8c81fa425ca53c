#!/usr/bin/env bash
# Reproduces models/bitnet-demo-i2_s.gguf and models/bitnet-demo-loss.svg with `bitnet train`:
# the synthetic corpus (40000 documents, seed 1: grammar-built short stories and Q/A dialogues), a
# byte-level BPE tokenizer trained on it (at most 1024 entries), and a BitNet b1.58 model (hidden 256,
# FFN 768, 5 layers, 4 query / 2 KV heads, context 256; about 4.2 M parameters) trained from scratch for
# 1000 steps of 16 x 128 tokens (about one pass over the corpus) on CPU. Deterministic from the seeds on
# the same machine and thread count. Interrupted? Run it again with RESUME=1 to continue from the last
# checkpoint (saved every 100 steps); the loss trajectory is the same as an uninterrupted run's.
#
# Then the chat template is set to end at "Assistant:" (already what `bitnet train` writes; kept
# explicit here) and the file is copied into models/.
#
# Usage: scripts/train-demo.sh [work-dir]   (default: target/demo-train)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/demo-train}"
mkdir -p "$work" models
cargo build --release -p bitnet-cli
bitnet=target/release/bitnet
[ -f "$work/corpus.txt" ] || "$bitnet" train --gen-corpus "$work/corpus.txt" --gen-docs 40000 --seed 1
resume=()
[ -n "${RESUME:-}" ] && resume=(--resume)
"$bitnet" train "$work/corpus.txt" -o "$work/ckpt" "${resume[@]}" \
  --vocab-size 1024 --hidden 256 --ffn 768 --layers 5 --heads 4 --kv-heads 2 --context 256 \
  --seq 128 --batch 16 --steps 1000 --lr 3e-3 --warmup 50 --val-every 100 --save-every 100 \
  --log-every 20 --seed 1 -t 2 --plot models/bitnet-demo-loss.svg --gguf "$work/demo.gguf"
cp "$work/demo.gguf" models/bitnet-demo-i2_s.gguf
ls -l models/
