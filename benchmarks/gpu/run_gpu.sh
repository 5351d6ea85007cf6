#!/usr/bin/env bash
# On a GPU machine with a CUDA build of torch (Python 3.12, no internet, no faiss):
#   1. build and install pst with its CUDA kernels,
#   2. run the CUDA parity tests,
#   3. run compute-sanitizer memcheck and racecheck on a small parity script,
#   4. run the GPU benchmarks (JSON under benchmarks/results/gpu_<gpu>.json).
# Usage: benchmarks/gpu/run_gpu.sh   (PYTHON=... to pick the interpreter)
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
cd "$REPO"
status=0
step() { echo; echo "=== $* ==="; }

step "build (FORCE_CUDA=1)"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" || exit 1
FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps . || exit 1

# Run from outside the checkout so that `import pst` finds the installed package (with pst._C),
# not the source tree.
WORK="$(mktemp -d)"
cd "$WORK"
"$PY" -c "import pst; assert pst.has_cuda(), 'pst was built without CUDA kernels'; print('pst from', pst.__file__)" || exit 1

step "parity tests"
"$PY" -c "import sys, pytest; sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '--rootdir', '$REPO', '$REPO/tests/test_cuda_parity.py']))" || status=1

SAN="$(command -v compute-sanitizer || true)"
[ -z "$SAN" ] && for c in "${CUDA_HOME:-}" /usr/local/cuda; do [ -x "$c/bin/compute-sanitizer" ] && SAN="$c/bin/compute-sanitizer" && break; done
if [ -n "$SAN" ]; then
  # no caching allocator under memcheck: every tensor is its own allocation, so overruns inside
  # torch's memory pool are seen too
  step "compute-sanitizer memcheck"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool memcheck --error-exitcode 99 "$PY" "$REPO/benchmarks/gpu/sanitize_small.py" || status=1
  step "compute-sanitizer racecheck"
  "$SAN" --tool racecheck --racecheck-report analysis --error-exitcode 99 "$PY" "$REPO/benchmarks/gpu/sanitize_small.py" || status=1
  step "compute-sanitizer synccheck"
  "$SAN" --tool synccheck --error-exitcode 99 "$PY" "$REPO/benchmarks/gpu/sanitize_small.py" || status=1
else
  echo "compute-sanitizer not found: memcheck / racecheck skipped"; status=1
fi

step "benchmarks"
"$PY" "$REPO/benchmarks/gpu/bench_gpu.py" --out "$REPO/benchmarks/results/gpu_$("$PY" -c "import re, torch; print(re.sub(r'[^A-Za-z0-9]+', '_', torch.cuda.get_device_name()).strip('_'))").json" || status=1

rm -rf "$WORK"
echo; echo "run_gpu.sh: $([ $status -eq 0 ] && echo OK || echo 'FAILED (see above)')"
exit $status
