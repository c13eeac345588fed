#!/usr/bin/env bash
# Set up monai-hyperconv in a virtual environment (default .venv) on a fresh machine.
#
#   bash scripts/setup.sh                 # CPU build of torch 2.13.0 unless a torch is already installed
#   TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://... bash scripts/setup.sh   # your own torch build
#   VENV=/path/to/env bash scripts/setup.sh
#
# torch is installed *first* and pinned by TORCH_SPEC: asking pip for an unpinned torch on a fresh
# environment would pull the newest CUDA build (several GB). An environment that already has a
# torch >= 2.8 (e.g. your GPU build, or a venv made with --system-site-packages) keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null

if "$PY" -c "import torch, sys; v = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 8))" 2>/dev/null; then
  echo "[setup] keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] installing $TORCH_SPEC"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q "$TORCH_SPEC"
  fi
fi
echo "[setup] installing monai-hyperconv and its dependencies"
"$PY" -m pip install -q -e ".[test]"
"$PY" -c "import torch, monai, monai_hyperconv; print(f'[setup] ready: torch {torch.__version__}, monai {monai.__version__}, monai_hyperconv {monai_hyperconv.__version__}')"
