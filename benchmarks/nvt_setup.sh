#!/usr/bin/env bash
# Creates a throw-away virtual environment with NVTabular 23.08 (CPU) for benchmarks/prepare.py, the
# baseline `specc data prepare` is compared with. Never committed, never used by specc itself.
#
#   bash benchmarks/nvt_setup.sh              # -> /tmp/nvt-venv
#   NVT_VENV=/some/dir bash benchmarks/nvt_setup.sh
#
# The pins are the Merlin 23.08 set (numpy<2, pandas<2, pyarrow<15, protobuf<4, dask 2023.7.1);
# dask-cuda is pinned too, since a newer one pulls a placeholder package that downloads from NVIDIA's index.
set -euo pipefail

VENV="${NVT_VENV:-/tmp/nvt-venv}"
PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then PYTHON=python3; fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip<25" "setuptools<70" wheel
"$VENV/bin/pip" install -q nvtabular==23.8.0 merlin-core==23.8.0 merlin-dataloader==23.8.0 \
    "numpy<2" "pandas<2" "pyarrow<15" "protobuf<4" "dask[dataframe]==2023.7.1" "distributed==2023.7.1" \
    "dask-cuda==23.8.0" psutil
"$VENV/bin/python" -c "import warnings; warnings.simplefilter('ignore'); import nvtabular; print('nvtabular', nvtabular.__version__)"
echo "NVTabular venv ready: $VENV"
