#!/usr/bin/env bash
# One short GPU check of the specc kernels and the end-to-end training throughput (run from anywhere; uses the repo it lives in).
#   benchmarks/gpu_check.sh               # GPU correctness checks + timing table (< 6 min on an H100)
#   benchmarks/gpu_check.sh --quick       # smaller timing set
#   WITH_PYTEST=1 benchmarks/gpu_check.sh # also run the @pytest.mark.gpu kernel tests first
set -uo pipefail
cd "$(dirname "$0")/.."
export TRITON_INTERPRET=0          # compiled kernels, never the interpreter
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
rc=0
if [[ "${WITH_PYTEST:-0}" == "1" ]] && $PY -c "import pytest" 2>/dev/null; then
  timeout 300 $PY -m pytest tests/test_kernels_gather.py tests/test_kernels_linear_cross_entropy.py \
      tests/test_kernels_sampled_softmax.py tests/test_kernels_topk.py -m gpu -q -x || rc=1
fi
timeout 420 $PY benchmarks/kernels.py "$@" || rc=1
timeout 180 $PY benchmarks/e2e_gpu.py --steps 20 || rc=1
exit $rc
