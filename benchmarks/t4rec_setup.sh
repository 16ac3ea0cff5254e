#!/usr/bin/env bash
# Creates a throw-away virtual environment with NVIDIA Transformers4Rec 23.12 for the baseline
# benchmark (benchmarks/t4rec_ml100k.py). It is never committed and never used by specc itself.
#
#   bash benchmarks/t4rec_setup.sh            # -> /tmp/t4rec-venv
#   T4REC_VENV=/some/dir bash benchmarks/t4rec_setup.sh
#
# torch is installed first, pinned to the CPU build: a bare `torch` requirement (pulled in by
# transformers4rec[pytorch]) would otherwise download a multi-GB CUDA build. On this project's
# machines the CPU wheel lies in pip's find-links folder (/opt/wheels); elsewhere the PyTorch CPU
# index is used (TORCH_INDEX_URL, default https://download.pytorch.org/whl/cpu).
set -euo pipefail

VENV="${T4REC_VENV:-/tmp/t4rec-venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then PYTHON=python3; fi
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade "pip<25" "setuptools<70" wheel

# 1. torch, CPU build.
if ls /opt/wheels/torch-"$TORCH_VERSION"+cpu-*.whl >/dev/null 2>&1; then
    "$PIP" install -q "torch==$TORCH_VERSION"
else
    "$PIP" install -q "torch==$TORCH_VERSION" \
        --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
fi

# 2. Merlin + Transformers4Rec with the versions that work together (T4Rec 23.12 needs
#    transformers < 4.31-ish APIs, merlin 23.8 needs numpy<2/pandas<2/pyarrow<15/protobuf<4).
"$PIP" install -q \
    "torch==$TORCH_VERSION" \
    merlin-core==23.8.0 merlin-dataloader==23.8.0 \
    "numpy<2" "pandas<2" "pyarrow<15" "protobuf<4" \
    "dask[dataframe]==2023.7.1" "distributed==2023.7.1" "dask-cuda==23.8.0" \
    "transformers4rec[pytorch]==23.12.0" "transformers==4.30.2" \
    psutil

"$PIP" check
"$VENV/bin/python" -c "import torch, transformers, transformers4rec.torch as tr; \
print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
echo "T4Rec venv ready: $VENV"
