#!/usr/bin/env bash
# run.sh: THE test command of Flashpoint.
#
#   bash tests/run.sh [--quick] [-L label] [-R regex] [-E regex] [-j N]
#
# 1. tests/harness/setup.sh (installs what a bare Debian 12 lacks; fast when nothing does);
# 2. build/      : configure + build (Ninja), ctest (every tier; services via the fixture);
# 3. build-asan/ : the same with -DFP_SANITIZE=ON (ASan + UBSan), skipped with --quick;
# 4. the libFuzzer targets for 30 s each (tests/fuzz/run.sh), skipped with --quick or -L/-R;
# 5. the soak's CI version on build-asan (bench/soak.sh --ci), skipped likewise;
# 6. the fault suite's CI subset on build/ (tests/faults/run.sh --ci), skipped likewise.
# -DFP_WERROR=ON when CI=true. -L/-R/-E are passed to ctest (fixtures pull in the service
# start/stop tests by themselves). Ends with "N passed, N failed" counted over the ctest
# tests of both passes (a build that fails counts as one failure) and exits non-zero if
# anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

quick=0
jobs=2
ctest_args=()
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	-L | -R | -E | -LE)
		(($# >= 2)) || { echo "run.sh: $1 needs an argument" >&2; exit 2; }
		ctest_args+=("$1" "$2")
		shift
		;;
	-j)
		(($# >= 2)) || { echo "run.sh: -j needs an argument" >&2; exit 2; }
		jobs=$2
		shift
		;;
	-h | --help)
		sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "run.sh: unknown option $1 (try --help)" >&2
		exit 2
		;;
	esac
	shift
done

t_start=$(date +%s)
bash tests/harness/setup.sh || { echo "run.sh: setup.sh failed" >&2; exit 1; }

cmake_common=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [[ ${CI:-} == true ]]; then
	cmake_common+=(-DFP_WERROR=ON)
fi

total_passed=0
total_failed=0
summary=()

# run_pass NAME BUILD_DIR CMAKE_ARGS...
run_pass() {
	local name=$1 dir=$2 t0 log passed failed total line
	shift 2
	t0=$(date +%s)
	echo "==== $name: configure and build in $dir ===="
	# A build dir made by another generator cannot be reused: start it afresh.
	if [[ -f $dir/CMakeCache.txt ]] &&
		! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
		rm -rf "$dir"
	fi
	if ! cmake -S . -B "$dir" "${cmake_common[@]}" "$@" || ! ninja -C "$dir"; then
		echo "run.sh: $name: build failed" >&2
		total_failed=$((total_failed + 1))
		summary+=("$name: BUILD FAILED ($(($(date +%s) - t0)) s)")
		return
	fi
	echo "==== $name: ctest -j$jobs ${ctest_args[*]:-} ===="
	log=$dir/run-ctest.log
	(cd "$dir" && ctest --output-on-failure -j"$jobs" "${ctest_args[@]}") 2>&1 | tee "$log"
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
	if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
		failed=${BASH_REMATCH[1]}
		total=${BASH_REMATCH[2]}
		passed=$((total - failed))
	elif grep -q 'No tests were found' "$log"; then
		passed=0 failed=0
	else
		passed=0 failed=1 # ctest itself broke: count it
	fi
	total_passed=$((total_passed + passed))
	total_failed=$((total_failed + failed))
	summary+=("$name: $passed passed, $failed failed ($(($(date +%s) - t0)) s)")
}

run_pass normal build -DFP_SANITIZE=OFF

if ((quick == 0)); then
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	run_pass sanitize build-asan -DFP_SANITIZE=ON
fi

# extra_step NAME COMMAND...: one more check outside ctest, counted as one test
extra_step() {
	local name=$1 t0
	shift
	echo "==== $name: $* ===="
	t0=$(date +%s)
	if "$@"; then
		total_passed=$((total_passed + 1))
		summary+=("$name: passed ($(($(date +%s) - t0)) s)")
	else
		total_failed=$((total_failed + 1))
		summary+=("$name: FAILED ($(($(date +%s) - t0)) s)")
	fi
}

if ((quick == 0)) && [[ ${#ctest_args[@]} -eq 0 ]]; then
	# 4. the libFuzzer targets, a short run each on the corpus and the regression seeds
	extra_step fuzz bash tests/fuzz/run.sh --seconds 30
	# 5. the soak's short version on the ASan build: memory and fds flat, LeakSanitizer
	#    clean, nothing lost across a Redis kill (bench/SOAK.md)
	extra_step soak bash bench/soak.sh --ci --build-dir build-asan
	# 6. the fault suite's CI subset on the normal build (tests/faults/README.md)
	extra_step faults bash tests/faults/run.sh --ci --build-dir build
fi

echo "==== summary ($(($(date +%s) - t_start)) s) ===="
for s in "${summary[@]}"; do echo "$s"; done
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
