#!/usr/bin/env bash
# The project's tests (README's test command): the Rust workspace, then the Python package built
# into a fresh virtual environment (scripts/test-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash scripts/test-python.sh
