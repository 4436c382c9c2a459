#!/usr/bin/env bash
# The GPU check of issue 19 in one go, about 10 minutes on one modern NVIDIA GPU: set up the CUDA
# path, run the GPU-relevant tests and the latency benchmark (both T3 families, one request and 8
# at once, against the original's loop on the same GPU), and write a table to $OUT/gpu-check.md.
#
#   bash scripts/gpu_check.sh                 # from the repository root; OUT=gpu-check by default
#   SKIP_SETUP=1 bash scripts/gpu_check.sh    # use .venv as it is (it must hold the CUDA vLLM)
#   BUDGET_S=900 bash scripts/gpu_check.sh    # more time for the benchmark
#
# Set-up is `VLLM_CHATTERBOX_TARGET=gpu bash scripts/setup.sh --test` (it needs a package index or
# PIP_FIND_LINKS with the wheels, uv's included). It is skipped when .venv already has vLLM and
# torch sees a GPU.
# The full-size random models are built once under ~/.cache/vllm_chatterbox (bench-full,
# bench-full-turbo). Every stage has its own time limit, so a slow stage cannot take the others'
# time; whatever finished is in the table.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-gpu-check}
BUDGET_S=${BUDGET_S:-600}
PY=.venv/bin/python
mkdir -p "$OUT"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET_S - $(elapsed) )); }
log() { echo "[gpu_check $(elapsed)s] $*"; }

if ! nvidia-smi -L > "$OUT/nvidia-smi.txt" 2>&1; then
    log "no NVIDIA GPU here (nvidia-smi -L failed)"; exit 1
fi

if [ -z "${SKIP_SETUP:-}" ] && ! "$PY" -c "import torch, vllm; assert torch.cuda.is_available()" 2>/dev/null; then
    log "setting up the CUDA path"
    if ! VLLM_CHATTERBOX_TARGET=gpu timeout 300 bash scripts/setup.sh --test > "$OUT/setup.log" 2>&1; then
        tail -20 "$OUT/setup.log"; log "set-up failed (log: $OUT/setup.log)"; exit 1
    fi
fi
if ! "$PY" -c "import torch, vllm; assert torch.cuda.is_available(), 'torch sees no GPU'" > "$OUT/env.log" 2>&1; then
    cat "$OUT/env.log"; log ".venv cannot use the GPU"; exit 1
fi
"$PY" -c "import torch, vllm, transformers; print(f'vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}')" > "$OUT/env.log" 2>&1

log "building the full-size random models (cached)"
"$PY" - > "$OUT/models.log" 2>&1 <<'EOF'
from vllm_chatterbox.demo_model import make_test_model
from vllm_chatterbox.t3.engine import cache_root

for name, variant, weights in (("bench-full", "original", "t3_cfg.safetensors"),
                               ("bench-full-turbo", "turbo", "t3_turbo_v1.safetensors")):
    directory = cache_root() / name
    if not (directory / weights).is_file():
        make_test_model(directory, size="full", seed=0, variant=variant)
EOF

# GPU-relevant tests: T3 on vLLM's CUDA engine against the original's recordings (both families,
# continuous batching, sampling order), the bf16 fast mode's bounds, the Turbo baseline's loop.
log "tests"
timeout $(( $(left) * 2 / 5 )) "$PY" -m pytest -q -p no:cacheprovider \
    tests/t3/llama/test_fixture_equivalence.py tests/t3/llama/test_sampling_distribution.py \
    tests/t3/llama/test_bf16.py tests/t3/gpt2/test_t3.py tests/t3/gpt2/test_bf16.py tests/t3/gpt2/test_reference.py \
    > "$OUT/tests.log" 2>&1
TESTS_RC=$?

log "latency benchmark"
timeout $(( $(left) - 15 )) env PYTHONPATH=. "$PY" bench/latency.py --family turbo original --reps 2 \
    --concurrency 8 --tokens 100 > "$OUT/latency.txt" 2> "$OUT/latency.log"
BENCH_RC=$?

{
    echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), $(elapsed) s)"
    echo
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
    echo "- $(cat "$OUT/env.log")"
    echo "- tests (exit $TESTS_RC): $(tail -1 "$OUT/tests.log")"
    echo "- latency benchmark (exit $BENCH_RC; 124 = stopped at the time limit):"
    echo
    echo '```'
    cat "$OUT/latency.txt"
    echo '```'
} > "$OUT/gpu-check.md"
cat "$OUT/gpu-check.md"
log "done: $OUT/gpu-check.md"
