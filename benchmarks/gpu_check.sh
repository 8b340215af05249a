#!/bin/bash
# The checks that need a GPU, in one run of a few minutes on one H100 or H200: the notebooks' `#| cuda` cells
# (bf16 MoE experts, FlexAttention forward and backward in a packed step), grouped-GEMM MoE speed and MFU.
#     bash benchmarks/gpu_check.sh            # from the repository root, after `make install`
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for nb in $(grep -l '#| cuda' nbs/*.ipynb); do
  echo "== $nb (#| cuda cells)"
  "$BIN/nbdev_test" --flags cuda --path "$nb" --do_print
done
echo "== benchmarks/moe_grouped.py"; "$BIN/python" benchmarks/moe_grouped.py --device cuda
echo "== benchmarks/mfu.py";         "$BIN/python" benchmarks/mfu.py --device cuda
