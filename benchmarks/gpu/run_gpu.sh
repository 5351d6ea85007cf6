#!/usr/bin/env bash
# Everything issue 12 needs from a GPU, in one call of at most BUDGET_S seconds (default 540):
#   1. build and install pst with its CUDA kernels (sm_90 only; FORCE_CUDA=1), then list the
#      kernels' registers / shared memory / spills;
#   2. the CUDA parity tests (CUDA kernel == CPU kernel) and the other tests marked `cuda`;
#   3. the GPU benchmarks (targets, bytes moved, implied bandwidth, host syncs, one
#      self-training iteration);
#   4. compute-sanitizer memcheck, racecheck and (time permitting) synccheck on small inputs.
# Each step runs under a time limit cut to what is left of the budget; a step that finds too
# little time left is skipped and reported. Outputs (at most 8 files, all directly in $OUT):
#   run_gpu.log       everything printed
#   summary.txt       one line per step: OK / FAILED / TIMEOUT / SKIPPED and seconds
#   parity.xml        the tests' JUnit report
#   gpu_results.json  the benchmark rows;  gpu_results.md  the same as a table
#
# Usage, on the GPU machine (CUDA torch, nvcc, ninja, Python 3.12; no network):
#   OUT=/some/dir benchmarks/gpu/run_gpu.sh
# Without a GPU, DRY_RUN=1 runs every step that can run on the CPU: nvcc -c of every CUDA
# source and g++ -fsyntax-only of the torch-side CUDA files instead of the build (the in-place
# CPU build of pst is used), the tests (the CUDA ones skip), the sanitizer script and the
# benchmarks on CPU tensors at small sizes (compute-sanitizer itself needs a GPU):
#   DRY_RUN=1 PYTHON=.venv/bin/python OUT=/tmp/gpu_dry benchmarks/gpu/run_gpu.sh
# The step functions run through `step` (exported, in a child bash): not unreachable.
# shellcheck disable=SC2317
set -uo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
if [ "$DRY_RUN" = 1 ]; then BUDGET_S="${BUDGET_S:-1500}"; else BUDGET_S="${BUDGET_S:-540}"; fi
OUT="${OUT:-$REPO/benchmarks/results/gpu_run}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1
START=$(date +%s)
status=0
cd "$REPO" || exit 1

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME LIMIT_S FUNCTION ARGS...: runs one of the functions below (exported, in a child bash)
# with a time limit of min(LIMIT_S, seconds left) and records the outcome in summary.txt;
# skipped when under 20 s are left.
step() {
  local name=$1 limit=$2 remain rc=0 t0 res
  shift 2
  remain=$(left)
  if [ "$remain" -lt "$limit" ]; then limit=$remain; fi
  if [ "$limit" -lt 20 ]; then
    printf '%-28s %-16s\n' "$name" "SKIPPED (budget)" | tee -a "$SUMMARY"
    status=1
    return 0
  fi
  echo
  echo "=== $name (limit ${limit}s, $(left)s of the budget left) ==="
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@" || rc=$?
  case $rc in
    0) res=OK ;;
    124 | 137) res=TIMEOUT ;;
    *) res="FAILED rc=$rc" ;;
  esac
  printf '%-28s %-16s %5ss\n' "$name" "$res" "$(($(date +%s) - t0))" | tee -a "$SUMMARY"
  if [ "$rc" -ne 0 ]; then status=1; fi
  return 0
}

env_info() {
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None, \
'threads', torch.get_num_threads())"
  command -v nvcc > /dev/null && nvcc --version | tail -n 2
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  fi
  return 0
}

build_gpu() {
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir -q . || return 1
  (cd "$WORK" && "$PY" - << 'EOF') || return 1
import pst
from pst._ops import has_kernel
assert pst.has_cuda(), "pst was built without CUDA kernels"
ops = ["connected_components", "morph_refine", "mean_shift", "grid_mean_shift", "merge_modes", "nearest_center",
       "sample_anchors", "knn_graph", "agglomerative_tree", "agglomerative_labels"]
missing = [op for op in ops if not has_kernel(op, "CUDA")]
print("pst from", pst.__file__, "- CUDA kernels for", len(ops) - len(missing), "of", len(ops), "ops")
assert not missing, f"no CUDA kernel for {missing}"
EOF
  # registers, shared memory, stack and spills of every kernel (what the benchmarks are read against)
  so="$(cd "$WORK" && "$PY" -c 'import pst._C as c; print(c.__file__)')"
  if command -v cuobjdump > /dev/null; then
    cuobjdump --dump-resource-usage "$so" | grep -E 'Function|REG' | sed 's/^ *//' | paste - - | cut -c1-220
  fi
  return 0
}

# Without a GPU: every CUDA source through nvcc -c (as `make cuda-check`), and every torch-side
# CUDA file through g++ -fsyntax-only against the installed torch's headers and CUDA's.
build_dry() {
  local tmp f inc cuda_inc
  tmp="$(mktemp -d)"
  command -v nvcc > /dev/null || { echo "nvcc not found"; return 1; }
  for f in csrc/cuda/*.cu; do
    echo "nvcc -c $f"
    nvcc -std=c++17 -O2 -Icsrc --expt-relaxed-constexpr -gencode=arch=compute_90,code=sm_90 -Xptxas -v \
      -c "$f" -o "$tmp/k.o" 2>&1 | grep -E 'error|warning|spill stores|Used' | grep -vE ' 0 bytes spill stores' | head -40
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
  done
  # torch's CPU wheels ship the c10/cuda headers but not the CMake-generated macros file
  mkdir -p "$tmp/shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$tmp/shim/c10/cuda/impl/cuda_cmake_macros.h"
  inc="$("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")"
  cuda_inc="$(dirname "$(dirname "$(command -v nvcc)")")/include"
  [ -f "$cuda_inc/cuda_runtime.h" ] || cuda_inc=/usr/local/cuda/include
  for f in csrc/cuda/*_cuda.cpp; do
    echo "g++ -fsyntax-only $f"
    # shellcheck disable=SC2086  # $inc is a list of -I flags
    g++ -std=c++20 -fsyntax-only -Wall -Icsrc $inc -I"$tmp/shim" -I"$cuda_inc" "$f" || return 1
  done
  rm -rf "$tmp"
  return 0
}

run_tests() {
  # every test marked `cuda`: the parity module and the CUDA variants of the op tests
  (cd "$WORK" && "$PY" -m pytest -q -rs -p no:cacheprovider --rootdir "$REPO" -c "$REPO/pyproject.toml" \
    -o addopts="" -m cuda --junitxml "$OUT/parity.xml" "$REPO/tests/test_cuda_parity.py" \
    "$REPO/tests/test_morph.py" "$REPO/tests/test_cluster.py" "$REPO/tests/test_agglomerative.py")
}

bench() {
  local dry=()
  if [ "$DRY_RUN" = 1 ]; then dry=(--dry-run); fi
  (cd "$WORK" && "$PY" "$REPO/benchmarks/gpu/bench_gpu.py" "${dry[@]}" --out "$OUT/gpu_results.json" \
    --md "$OUT/gpu_results.md")
}

SAN=""
find_sanitizer() {
  SAN="$(command -v compute-sanitizer || true)"
  if [ -z "$SAN" ]; then
    for c in "${CUDA_HOME:-}" /usr/local/cuda; do
      if [ -n "$c" ] && [ -x "$c/bin/compute-sanitizer" ]; then SAN="$c/bin/compute-sanitizer"; fi
    done
  fi
}

sanitize() {
  local tool=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "(dry run: compute-sanitizer --tool $tool $* would run the script below; here without it, on CPU tensors)"
    (cd "$WORK" && "$PY" "$REPO/benchmarks/gpu/sanitize_small.py" --dry-run)
    return
  fi
  [ -n "$SAN" ] || { echo "compute-sanitizer not found"; return 1; }
  # no caching allocator under memcheck: every tensor is its own allocation, so an overrun inside
  # torch's memory pool is seen too
  local pre=(env)
  if [ "$tool" = memcheck ]; then pre=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1); fi
  (cd "$WORK" && "${pre[@]}" "$SAN" --tool "$tool" "$@" --error-exitcode 99 "$PY" \
    "$REPO/benchmarks/gpu/sanitize_small.py")
}

# Runs from outside the checkout, so that `import pst` finds the installed package (with
# pst._C), not the source tree; a dry run uses the source tree and its in-place CPU build.
if [ "$DRY_RUN" = 1 ]; then
  WORK="$REPO"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  WORK="$(mktemp -d)"
fi
find_sanitizer
export -f env_info build_gpu build_dry run_tests bench sanitize
export PY REPO OUT WORK DRY_RUN SAN

main() {
echo "run_gpu.sh: DRY_RUN=$DRY_RUN, budget ${BUDGET_S}s, outputs in $OUT, sanitizer: ${SAN:-none}"

step "environment" 30 env_info
if [ "$DRY_RUN" = 1 ]; then
  step "build (compile checks)" 600 build_dry
else
  step "build (pip install, sm_90)" 300 build_gpu
  if ! tail -n 1 "$SUMMARY" | grep -q ' OK '; then
    echo "build failed: nothing else can run"
    return 1
  fi
fi
step "tests (cuda parity)" 150 run_tests
step "benchmarks" 200 bench
step "compute-sanitizer memcheck" 120 sanitize memcheck --leak-check no
step "compute-sanitizer racecheck" 120 sanitize racecheck --racecheck-report analysis
step "compute-sanitizer synccheck" 90 sanitize synccheck

if [ "$WORK" != "$REPO" ]; then rm -rf "$WORK"; fi
echo
echo "=== summary ($(($(date +%s) - START))s of ${BUDGET_S}s) ==="
cat "$SUMMARY"
echo "run_gpu.sh: $([ $status -eq 0 ] && echo OK || echo 'FAILED (see above)')"
return $status
}

main 2>&1 | tee "$OUT/run_gpu.log"
exit "${PIPESTATUS[0]}"
