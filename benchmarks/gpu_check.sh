#!/bin/bash
# The checks that need a GPU, in one run of at most 10 minutes on one H100 or H200 (`benchmarks/gpu_check.py`):
# the notebooks' `#| cuda` cells, bf16 MoE (grouped GEMM, stacked pools), MFU at mid size, paper-tiny under torchrun.
# Writes gpu_check.json (one file, every check's measurements); record them in BENCHMARKS.md.
#     bash benchmarks/gpu_check.sh            # from the repository root, after `make install`
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$BIN/python" benchmarks/gpu_check.py "$@"
