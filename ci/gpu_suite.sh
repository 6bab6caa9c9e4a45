#!/usr/bin/env bash
# The one GPU command (`make gpu-test`): GPU conformance at full size, a memcheck
# pass over every kernel, the kernel benchmarks and their report, all written
# straight into one output folder (8 files at most, none in sub-folders):
#   machine.txt conformance.xml sanitizer.txt bench_decode.json bench_prefill.json
#   bench_write.json report.md log.txt
# Budget on an H100: about 8 minutes; each step has a cap and prints timestamps.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: ci/gpu_suite.sh [OUT_DIR] [--quick] [--tests-only | --bench-only]
  OUT_DIR       where every result goes (default: $OUT, else ./out)
  --quick       fewer benchmark shapes and the ci Hypothesis profile
  --tests-only  conformance + memcheck only
  --bench-only  benchmarks + report only
Step caps (seconds) come from the environment: CAP_CONF, CAP_KERNELS, CAP_SANITIZER,
CAP_DECODE, CAP_PREFILL, CAP_WRITE. Exit status: 0 when every step passed.
EOF
}

out_dir="${OUT:-./out}"; quick=0; tests=1; bench=1
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --tests-only) bench=0 ;;
    --bench-only) tests=0 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; usage >&2; exit 2 ;;
    *) out_dir="$arg" ;;
  esac
done

cd "$(dirname "$0")/.."
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
exec > >(tee -a "$out_dir/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY="${PYTHON:-python3}"
profile=gpu; [ "$quick" = 1 ] && profile=ci && export BENCH_QUICK=1
status=0
declare -a summary

stamp() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

# step NAME CAP CMD...: run CMD under a time cap, record its exit status.
step() {
  local name="$1" cap="$2"; shift 2
  stamp "start $name (cap ${cap}s)"
  timeout --signal=INT --kill-after=20 "$cap" "$@"
  local rc=$?
  [ "$rc" = 124 ] && echo "$name: hit its ${cap}s cap"
  [ "$rc" = 5 ] && echo "$name: no tests collected (fine)" && rc=0
  stamp "end $name: exit $rc"
  summary+=("$name: exit $rc")
  [ "$rc" = 0 ] || status=1
  return 0
}

stamp "gpu suite: out=$out_dir quick=$quick tests=$tests bench=$bench"
{
  nvidia-smi -q | head -n 60
  echo; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  echo; "$PY" -c 'import sys, torch, triton; p = torch.cuda.get_device_properties(0); print("python", sys.version.split()[0], "| torch", torch.__version__, "| triton", triton.__version__, "| cuda", torch.version.cuda, "|", p.name, p.multi_processor_count, "SMs")'
  echo; git log -1 --format='commit %H %s' 2>/dev/null
} > "$out_dir/machine.txt" 2>&1
stamp "machine: $(grep -m1 'Product Name' "$out_dir/machine.txt" | sed 's/.*: //')"

if [ "$tests" = 1 ]; then
  step "conformance -m gpu" "${CAP_CONF:-90}" \
    "$PY" -m pytest conformance -m gpu --ignore-glob='conformance/test_kernel_*.py' -q \
      -p no:cacheprovider --junitxml="$tmp/gpu.xml"
  step "kernel conformance ($profile)" "${CAP_KERNELS:-180}" \
    env HYPOTHESIS_PROFILE=$profile "$PY" -m pytest conformance/test_kernel_*.py -q \
      -p no:cacheprovider --junitxml="$tmp/kernels.xml"
  "$PY" -m ci.merge_junit "$out_dir/conformance.xml" "$tmp/gpu.xml" "$tmp/kernels.xml"

  # Own allocations per tensor, so memcheck sees an overrun past a tensor's end.
  stamp "start compute-sanitizer memcheck (cap ${CAP_SANITIZER:-120}s)"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout --signal=INT --kill-after=20 "${CAP_SANITIZER:-120}" \
    compute-sanitizer --tool memcheck --error-exitcode 99 "$PY" -m bench.sanitize_kernels \
    > "$out_dir/sanitizer.txt" 2>&1
  rc=$?
  if [ "$rc" = 0 ] && grep -q "ERROR SUMMARY: 0 errors" "$out_dir/sanitizer.txt"; then
    verdict="memcheck: CLEAN (0 errors; every kernel check passed)"
  elif [ "$rc" = 99 ]; then verdict="memcheck: NOT CLEAN (errors reported above)"
  elif [ "$rc" = 124 ]; then verdict="memcheck: INCOMPLETE (hit its cap)"
  else verdict="memcheck: run failed or a kernel check failed (exit $rc)"
  fi
  echo "$verdict" | tee -a "$out_dir/sanitizer.txt"
  grep -E "^(ok|FAIL) " "$out_dir/sanitizer.txt"
  stamp "end compute-sanitizer: exit $rc"
  summary+=("$verdict"); [ "$rc" = 0 ] || status=1
fi

if [ "$bench" = 1 ]; then
  for part in decode:${CAP_DECODE:-200} prefill:${CAP_PREFILL:-60} write:${CAP_WRITE:-45}; do
    name="${part%%:*}"; cap="${part##*:}"
    # The in-test budget skips what is left 30 s before the cap, so the JSON is always written.
    step "bench $name" "$cap" env BENCH_BUDGET_S=$((cap - 30)) \
      "$PY" -m pytest "bench/bench_kernels_$name.py" -m gpu -q -s -p no:cacheprovider \
        --benchmark-json="$out_dir/bench_$name.json"
  done
  step "report" 60 "$PY" -m bench.report --results "$out_dir" --out "$out_dir/report.md" --no-plots
fi

stamp "summary"
printf '  %s\n' "${summary[@]}"
exit $status
