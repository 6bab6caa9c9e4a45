#!/usr/bin/env bash
# The one GPU command (`make gpu-test`): GPU conformance at full size, a memcheck
# pass over every kernel, the kernel benchmarks and their report, all written
# straight into one output folder (8 files at most, none in sub-folders):
#   machine.txt conformance.xml sanitizer.txt bench_decode.json bench_prefill.json
#   bench_write.json (write_kv and the launch-cost benchmark) report.md log.txt, and
#   with FlashInfer's wheels carried flashinfer_build.txt flashinfer_modules.tar.gz
# The whole run keeps to SUITE_BUDGET_S (default 570 s on an H100): each step gets a
# cap that leaves the later steps their reserve, and prints timestamps.
set -uo pipefail

usage() {
  cat <<'EOF'
usage: ci/gpu_suite.sh [OUT_DIR] [--quick] [--tests-only | --bench-only]
  OUT_DIR       where every result goes (default: $OUT, else ./out)
  --quick       fewer benchmark shapes and the ci Hypothesis profile
  --tests-only  conformance + memcheck only
  --bench-only  benchmarks + report only
Environment: SUITE_BUDGET_S (default 570) bounds the whole run; WANT_CONFORMANCE_S (default
300) caps the GPU conformance, WANT_SANITIZER_S (default 60) the memcheck pass, WANT_DECODE_S (default 240) the decode benchmark; KERNEL_TEST_WORKERS (default: one per CPU core but one, at most 15) its pytest-xdist workers; a step stopped at
its cap gets SIGINT, so pytest still writes what it finished. PYTHON (default python3).
Exit status: 0 when every step passed.
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
budget="${SUITE_BUDGET_S:-570}"
profile=gpu; [ "$quick" = 1 ] && profile=ci && export BENCH_QUICK=1
# Seconds each step may want (typical on an H100 in brackets), and what the bench keeps back.
want_conformance=${WANT_CONFORMANCE_S:-300} want_sanitizer=${WANT_SANITIZER_S:-60}   # [H200 machine, 16 cores: 254 s for 406 tests with 15 workers; 21-46]
# decode: one flex compile per batch and head shape. When the two steps do not fit one
# budget, run --tests-only and --bench-only separately.
want_decode=${WANT_DECODE_S:-240} want_prefill=${WANT_PREFILL_S:-60} want_write=20     # [73-128, 8-13, 5-12]
want_launch=15     # bench_launch.py (host cost of a call beside a bare launch; ~10 s estimated), in the write step's JSON
bench_reserve=$(( bench ? want_decode + want_prefill + want_write + want_launch + 15 : 0 ))
status=0
declare -a summary

stamp() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*"; }

# cap WANT RESERVE: WANT, cut so that RESERVE seconds of the budget stay for later steps.
cap() { local left=$(( budget - SECONDS - $2 )); echo $(( $1 < left ? $1 : (left > 10 ? left : 10) )); }

# step NAME CAP CMD...: run CMD under a time cap, record its exit status.
step() {
  local name="$1" cap="$2"; shift 2
  stamp "start $name (cap ${cap}s)"
  timeout --signal=INT --kill-after=20 "$cap" "$@"
  local rc=$?
  [ "$rc" = 124 ] && echo "$name: stopped at its ${cap}s cap (results so far kept)"
  [ "$rc" = 5 ] && echo "$name: no tests collected (fine)" && rc=0
  stamp "end $name: exit $rc"
  summary+=("$name: exit $rc")
  [ "$rc" = 0 ] || status=1
  return 0
}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_suite: no CUDA device here (torch.cuda.is_available() is False); this is the GPU command" >&2
  exit 2
fi
stamp "gpu suite: out=$out_dir quick=$quick tests=$tests bench=$bench budget=${budget}s"
{
  nvidia-smi -q | head -n 60
  echo; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  echo; "$PY" -c 'import sys, torch, triton; p = torch.cuda.get_device_properties(0); print("python", sys.version.split()[0], "| torch", torch.__version__, "| triton", triton.__version__, "| cuda", torch.version.cuda, "|", p.name, p.multi_processor_count, "SMs")'
  # SOURCE_COMMIT names the tree when this copy's .git is missing or stale (a copied work tree).
  echo; if [ -n "${SOURCE_COMMIT:-}" ]; then echo "commit $SOURCE_COMMIT (from SOURCE_COMMIT)"
  else git log -1 --format='commit %H %s' 2>/dev/null; git status --porcelain 2>/dev/null | grep -q . && echo "(uncommitted changes)"; fi
} > "$out_dir/machine.txt" 2>&1
stamp "machine: $(grep -m1 'Product Name' "$out_dir/machine.txt" | sed 's/.*: //')"

# FlashInfer, the kernel benchmarks' peer: installed from carried wheels (.whl/, see
# ../shared/peers/flashinfer.md) when present; its JIT modules build in the background
# while the conformance runs (modules a previous run exported come from
# .cache/flashinfer_modules.tar.gz). Without the wheels the benchmarks record why.
fi_pid=""
if [ "$bench" = 1 ] && compgen -G ".whl/flashinfer_python-*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fi_site .whl/*.whl \
    && export PYTHONPATH="/tmp/fi_site${PYTHONPATH:+:$PYTHONPATH}"
  export FLASHINFER_CUDA_ARCH_LIST=9.0a FLASHINFER_WORKSPACE_BASE="${FLASHINFER_WORKSPACE_BASE:-/tmp/fi_ws}"
  prebuilt=(); [ -f .cache/flashinfer_modules.tar.gz ] && prebuilt=(--import .cache/flashinfer_modules.tar.gz)
  stamp "start FlashInfer module builds (background, log flashinfer_build.txt)"
  "$PY" -m bench.flashinfer_prebuild "${prebuilt[@]}" --export "$out_dir/flashinfer_modules.tar.gz" \
    > "$out_dir/flashinfer_build.txt" 2>&1 &
  fi_pid=$!
fi

if [ "$tests" = 1 ]; then
  # The GPU subset: the kernel tests (marked `kernel` by conformance/conftest.py; on a
  # GPU they run at full size) and anything marked `gpu`. The slowest 20 are listed at the
  # end, and a test past 120 s prints every thread's stack (session 10's capped runs stopped
  # with workers in ptxas and no way to tell which tests held them). Their time goes mostly to
  # Triton JIT compiles (one per drawn shape, CPU-bound ptxas): spread them over
  # worker processes when pytest-xdist is there.
  workers=()
  # The compiles are CPU-bound: one worker per core but one (the GPU's driver thread), at most 15.
  cores="$(nproc 2>/dev/null || echo 2)"; auto_workers=$(( cores > 16 ? 15 : (cores > 1 ? cores - 1 : 1) ))
  "$PY" -c 'import xdist' 2>/dev/null && workers=(-n "${KERNEL_TEST_WORKERS:-$auto_workers}" --dist load)
  step "GPU conformance ($profile)" "$(cap $want_conformance $(( want_sanitizer + bench_reserve )))" \
    env HYPOTHESIS_PROFILE=$profile "$PY" -m pytest conformance -m "gpu or kernel" -q "${workers[@]}" \
      -p no:cacheprovider --junitxml="$out_dir/conformance.xml" --durations=20 -o faulthandler_timeout=120

  # Own allocations per tensor, so memcheck sees an overrun past a tensor's end.
  limit="$(cap $want_sanitizer $bench_reserve)"
  stamp "start compute-sanitizer memcheck (cap ${limit}s)"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout --signal=INT --kill-after=20 "$limit" \
    compute-sanitizer --tool memcheck --error-exitcode 99 "$PY" -m bench.sanitize_kernels \
    > "$out_dir/sanitizer.txt" 2>&1
  rc=$?
  # memcheck's own verdict (exit 99 = errors found) apart from the kernels' result checks (exit 1).
  if grep -q "ERROR SUMMARY: 0 errors" "$out_dir/sanitizer.txt" && [ "$rc" != 99 ]; then
    verdict="memcheck: CLEAN (0 errors)"
  elif [ "$rc" = 99 ]; then verdict="memcheck: NOT CLEAN (see the errors above)"
  elif [ "$rc" = 124 ]; then verdict="memcheck: INCOMPLETE (hit its cap)"
  else verdict="memcheck: no verdict (exit $rc)"
  fi
  checks="$(grep -E '^[0-9]+/[0-9]+ kernel checks passed' "$out_dir/sanitizer.txt" || echo 'kernel checks: no result')"
  echo "$verdict; $checks" | tee -a "$out_dir/sanitizer.txt"
  grep -E "^(ok|FAIL) " "$out_dir/sanitizer.txt" | cut -c1-160
  stamp "end compute-sanitizer: exit $rc"
  summary+=("$verdict; $checks"); [ "$rc" = 0 ] || status=1
fi

if [ "$bench" = 1 ]; then
  if [ -n "$fi_pid" ]; then
    # Capped like every step: uncapped, a slow build (569 s beside the conformance's
    # compiles on the H200 machine) ate the benchmarks' whole budget. Past the cap the
    # builds stop and the benchmarks record FlashInfer's modules as missing.
    fi_cap="$(cap 240 $(( want_decode + want_prefill + want_write + want_launch + 15 )))"
    stamp "waiting for the FlashInfer builds (cap ${fi_cap}s)"
    fi_waited=0
    while kill -0 "$fi_pid" 2>/dev/null && [ "$fi_waited" -lt "$fi_cap" ]; do sleep 2; fi_waited=$(( fi_waited + 2 )); done
    if kill -0 "$fi_pid" 2>/dev/null; then
      kill -INT "$fi_pid" 2>/dev/null; sleep 2; kill -9 "$fi_pid" 2>/dev/null
      stamp "FlashInfer builds: stopped at their ${fi_cap}s cap"; summary+=("FlashInfer builds: stopped at the cap")
      export PAGEDLM_FLASHINFER_SKIP="its module builds were stopped at the suite's ${fi_cap}s cap (see flashinfer_build.txt)"
    else
      wait "$fi_pid"; stamp "FlashInfer builds: exit $? ($(tail -n 1 "$out_dir/flashinfer_build.txt"))"
    fi
  fi
  # name:want:reserve:files (comma-separated; the launch benchmark shares the write step's JSON,
  # so the folder keeps to the 8 files above).
  for part in decode:$want_decode:$(( want_prefill + want_write + want_launch + 15 )):bench/bench_kernels_decode.py \
              prefill:$want_prefill:$(( want_write + want_launch + 15 )):bench/bench_kernels_prefill.py \
              write:$(( want_write + want_launch )):15:bench/bench_kernels_write.py,bench/bench_launch.py; do
    IFS=: read -r name want reserve files <<< "$part"
    IFS=, read -r -a paths <<< "$files"
    limit="$(cap "$want" "$reserve")"
    # The in-test budget skips what is left 20 s before the cap, so the JSON is always written.
    step "bench $name" "$limit" env BENCH_BUDGET_S=$(( limit > 30 ? limit - 20 : 10 )) \
      "$PY" -m pytest "${paths[@]}" -m gpu -q -s -p no:cacheprovider \
        --benchmark-json="$out_dir/bench_$name.json"
  done
  step "report" 15 "$PY" -m bench.report --results "$out_dir" --out "$out_dir/report.md" --no-plots
fi

stamp "summary"
printf '  %s\n' "${summary[@]}"
exit $status
