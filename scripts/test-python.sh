#!/usr/bin/env bash
# Builds the Python package (crates/bitnet-py, with maturin) into a fresh virtual environment under
# target/ and runs its tests. Needs python3 with venv and PyPI (maturin, pytest, numpy). The tests
# compare against the `bitnet` binary: $BITNET_BIN, else target/release/bitnet or target/debug/bitnet
# (which `cargo test --workspace` builds).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-venv
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "maturin>=1.5,<2" pytest numpy
# The extension's own cargo target directory stays under target/ too.
CARGO_TARGET_DIR=target/python-build maturin develop --release --quiet
python -m pytest crates/bitnet-py/tests -q
