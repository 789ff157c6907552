#!/usr/bin/env bash
# tests/fuzz/run.sh [--seconds N] [target...]
#
# Builds the libFuzzer targets (clang, FP_FUZZ=ON, in build-fuzz/ unless FP_FUZZ_BUILD says
# otherwise) when needed, then for each target (default: every tests/fuzz/fuzz_*.c):
#   1. replays the regression seeds of tests/fuzz/regressions/<target>/ (each must pass);
#   2. fuzzes for N seconds (default 60) from the seed corpus tests/fuzz/corpus/<target>/ plus
#      a working corpus kept in the build dir, with -timeout=2 -rss_limit_mb=1024 and the
#      target's dictionary (tests/fuzz/<target>.dict) if there is one.
# Prints the executions per target and every finding (the input is saved under
# <build>/fuzz/artifacts/). Exits 1 if any target crashed, leaked, timed out or ran out of
# memory; 2 on a usage or build error. Targets run one after another, under nice -n 10.
#
# Environment: FP_FUZZ_BUILD (build dir), FP_FUZZ_NICE (default 10), FP_FUZZ_JOBS (build
# parallelism), FP_FUZZ_MASK_KNOWN (see README.md: steer around reported findings).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FP_FUZZ_BUILD:-$root/build-fuzz}
niceness=${FP_FUZZ_NICE:-10}
seconds=60
targets=()

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || { usage >&2; exit 2; }; seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#--seconds=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}"); shift ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "run.sh: --seconds wants a whole number" >&2; exit 2 ;; esac
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz_*.c; do n=$(basename "$f" .c); targets+=("${n#fuzz_}"); done
fi
for t in "${targets[@]}"; do
  [ -f "$here/fuzz_$t.c" ] || { echo "run.sh: no target fuzz_$t (tests/fuzz/fuzz_$t.c)" >&2; exit 2; }
done

# ---- build ----------------------------------------------------------------------------------
cc=${CC:-}
if [ -z "$cc" ] || ! "$cc" --version 2>/dev/null | grep -q clang; then
  cc=$(command -v clang || command -v clang-14 || true)
fi
if [ -z "$cc" ]; then
  echo "run.sh: clang not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
mkdir -p "$build"
if ! grep -qs '^FP_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  [ -f "$build/CMakeCache.txt" ] && gen=() # keep the generator the directory was made with
  CC=$cc cmake -S "$root" -B "$build" "${gen[@]}" -DFP_FUZZ=ON -DFP_BUILD_TESTS=OFF \
    -DFP_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/fuzz-configure.log" 2>&1 ||
    { cat "$build/fuzz-configure.log" >&2; echo "run.sh: cmake failed" >&2; exit 2; }
fi
cmake --build "$build" --parallel "${FP_FUZZ_JOBS:-2}" --target "${targets[@]/#/fuzz_}" \
  >"$build/fuzz-build.log" 2>&1 ||
  { tail -40 "$build/fuzz-build.log" >&2; echo "run.sh: build failed (log: $build/fuzz-build.log)" >&2; exit 2; }

# ---- run ------------------------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/fuzz/artifacts" "$build/fuzz/logs"
status=0
summary=()
for t in "${targets[@]}"; do
  bin=$build/fuzz/fuzz_$t
  work=$build/fuzz/work/$t
  log=$build/fuzz/logs/$t.log
  mkdir -p "$work"
  : >"$log"
  result=ok
  # 1. regression seeds: each one is run once and must pass
  regs=()
  if [ -d "$here/regressions/fuzz_$t" ]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "$here/regressions/fuzz_$t" -type f ! -name '*.md' -print0 | sort -z)
  fi
  if [ ${#regs[@]} -gt 0 ]; then
    for f in "${regs[@]}"; do
      if ! nice -n "$niceness" "$bin" -timeout=2 -rss_limit_mb=1024 "$f" >>"$log" 2>&1; then
        echo "FINDING fuzz_$t: regression seed fails: ${f#$root/}"
        result=regression-failed
        status=1
      fi
    done
  fi
  # 2. fuzzing for N seconds
  dict=()
  [ -f "$here/fuzz_$t.dict" ] && dict=(-dict="$here/fuzz_$t.dict")
  corpus=()
  [ -d "$here/corpus/fuzz_$t" ] && corpus=("$here/corpus/fuzz_$t")
  start=$(date +%s)
  nice -n "$niceness" "$bin" -max_total_time="$seconds" -timeout=2 -rss_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$build/fuzz/artifacts/fuzz_$t-" "${dict[@]}" \
    "$work" "${corpus[@]}" >>"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
  if [ -z "$execs" ]; then # a crash ends the run before the final stats: take the last status line
    execs=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  cov=$(grep -aoE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  if [ $rc -ne 0 ]; then
    status=1
    result="FINDING (exit $rc)"
    echo "FINDING fuzz_$t (exit $rc):"
    grep -aE 'ERROR: libFuzzer|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error|FUZZ CHECK FAILED|SUMMARY:|Test unit written|^Base64:' "$log" | head -14 | sed 's/^/  /'
  fi
  line=$(printf '%-16s %-22s execs %-10s in %4ss  %s' "fuzz_$t" "$result" "${execs:-0}" "$took" "$cov")
  echo "$line"
  summary+=("$line")
done
echo "---- fuzz summary (${seconds}s per target; logs: ${build#$root/}/fuzz/logs) ----"
printf '%s\n' "${summary[@]}"
exit $status
