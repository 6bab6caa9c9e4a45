#!/usr/bin/env bash
# The GPU conformance subset under compute-sanitizer memcheck (`make gpu-memcheck`):
# every kernel test (and anything marked `gpu`) with the ci Hypothesis profile, so
# each drawn shape runs its kernels under memcheck once. Writes into OUT_DIR:
#   memcheck_conformance.txt  (the sanitizer's report and pytest's summary)
#   memcheck_conformance.xml  (JUnit)
# Exit 0 only when memcheck found 0 errors and every test passed.
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: ci/memcheck_conformance.sh [OUT_DIR]   (default: \$OUT, else ./out)"
  echo "Environment: MEMCHECK_CAP_S (default 560) caps the run; KERNEL_TEST_WORKERS (default 8); PYTHON."
  exit 0
fi
out_dir="${1:-${OUT:-./out}}"
cd "$(dirname "$0")/.."
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "memcheck_conformance: no CUDA device here (torch.cuda.is_available() is False)" >&2
  exit 2
fi
workers=()
"$PY" -c 'import xdist' 2>/dev/null && workers=(-n "${KERNEL_TEST_WORKERS:-8}" --dist load)
report="$out_dir/memcheck_conformance.txt"
# Own allocations per tensor, so memcheck sees an overrun past a tensor's end; the
# sanitizer follows pytest-xdist's worker processes (--target-processes all).
PYTORCH_NO_CUDA_MEMORY_CACHING=1 HYPOTHESIS_PROFILE=ci PYTHONUNBUFFERED=1 \
  timeout --signal=INT --kill-after=20 "${MEMCHECK_CAP_S:-560}" \
  compute-sanitizer --tool memcheck --target-processes all --error-exitcode 99 \
  "$PY" -m pytest conformance -m "gpu or kernel" -q "${workers[@]}" -p no:cacheprovider \
    --junitxml="$out_dir/memcheck_conformance.xml" > "$report" 2>&1
rc=$?
errors="$(grep -E 'ERROR SUMMARY: [0-9]+ error' "$report" | awk '{s += $4} END {print s + 0}')"
summaries="$(grep -cE 'ERROR SUMMARY' "$report")"
tests="$(grep -E '[0-9]+ (passed|failed)' "$report" | tail -1)"
if [ "$rc" = 124 ]; then verdict="INCOMPLETE (hit its cap)"
elif [ "$summaries" = 0 ]; then verdict="no verdict (no ERROR SUMMARY; exit $rc)"
elif [ "$errors" = 0 ]; then verdict="CLEAN (0 errors in $summaries processes)"
else verdict="NOT CLEAN ($errors errors)"
fi
echo "memcheck over the GPU conformance: $verdict; pytest: ${tests:-no summary}" | tee -a "$report"
[ "$rc" = 0 ] && [ "$errors" = 0 ] && [ "$summaries" != 0 ]
