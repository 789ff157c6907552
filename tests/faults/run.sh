#!/usr/bin/env bash
# run.sh: the fault suite of issue #10: a table of faults against the real engine.
#
#   bash tests/faults/run.sh [--ci] [--build-dir DIR] [--only ROW,...] [--keep-logs]
#
# Builds faults_run, faults_mockhost and flashpoint in DIR (default build-faults), starts
# its own Kafka broker and redis-server (tests/harness/services.sh, an env file of its own),
# runs every row (--ci: the subset that fits in about 4 minutes on 2 cores; --only: the
# named rows) one process each, prints the table, stops the services (also on failure or
# Ctrl-C) and exits non-zero if any row lost a mention, had a window error, a non-identical
# duplicate or another failed check, or did not recover within 30 s of the fault clearing.
# Engine logs and each row's stderr are kept in a scratch dir, removed when every row
# passed (unless --keep-logs). Rows and oracle: tests/faults/README.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1

ci=0
build_dir=build-faults
only=
keep=0
while (($#)); do
	case $1 in
	--ci) ci=1 ;;
	--build-dir)
		(($# >= 2)) || { echo "run.sh: --build-dir needs an argument" >&2; exit 2; }
		build_dir=$2
		shift
		;;
	--only)
		(($# >= 2)) || { echo "run.sh: --only needs an argument" >&2; exit 2; }
		only=$2
		shift
		;;
	--keep-logs) keep=1 ;;
	-h | --help)
		sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fp-faults.XXXXXX") || exit 1
envfile=$scratch/services.env
row_pid=

cleanup() {
	if [[ -n $row_pid ]] && kill -0 "$row_pid" 2>/dev/null; then
		kill -TERM "$row_pid" 2>/dev/null # faults_run takes its engine and mock host down
		wait "$row_pid" 2>/dev/null
	fi
	bash tests/harness/services.sh stop "$envfile" >/dev/null 2>&1
	[[ -d $scratch ]] && echo "logs: $scratch" >&2
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

echo "==== build in $build_dir ===="
if [[ -f $build_dir/CMakeCache.txt ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt"; then
	echo "run.sh: $build_dir was not made by Ninja; use another --build-dir" >&2
	exit 2
fi
if ! cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$scratch/cmake.log" 2>&1 ||
	! ninja -C "$build_dir" flashpoint faults_run faults_mockhost >"$scratch/build.log" 2>&1; then
	tail -n 40 "$scratch/cmake.log" "$scratch/build.log" >&2
	echo "run.sh: build failed" >&2
	exit 1
fi
bin=$build_dir/tests/faults/faults_run

if [[ -n $only ]]; then
	IFS=, read -r -a rows <<<"$only"
else
	mapfile -t rows < <("$bin" --list $( ((ci)) && echo --ci))
fi

echo "==== services ($envfile) ===="
if ! bash tests/harness/services.sh start "$envfile"; then
	echo "run.sh: services did not start" >&2
	exit 1
fi
export FP_SERVICES_ENV=$envfile

results=()
failed=0
for row in "${rows[@]}"; do
	t0=$(date +%s)
	echo "==== row $row ===="
	"$bin" $( ((ci)) && echo --ci) --logdir "$scratch" "$row" >"$scratch/$row.out" 2>"$scratch/$row.err" &
	row_pid=$!
	wait "$row_pid"
	rc=$?
	row_pid=
	line=$(grep -m1 $'^FXROW\t' "$scratch/$row.out")
	if [[ -z $line ]]; then
		line=$'FXROW\t'"$row"$'\t(no result: exit '"$rc"$')\t-\t-\t-\t-\t-\tFAIL\tsee '"$scratch/$row.err"
	fi
	if ((rc != 0)); then
		failed=$((failed + 1))
		grep -E '^(/|FAIL|  )' "$scratch/$row.err" | grep -v '^%' | head -n 20 >&2
	fi
	results+=("$line")
	printf '%s (%d s)\n' "$(cut -f2,9 <<<"$line" | tr '\t' ' ')" $(($(date +%s) - t0))
	# a row that failed may have left the services in a bad state (a frozen Redis): restart
	if ((rc != 0)) && ! bash tests/harness/services.sh start "$envfile" >/dev/null 2>&1; then
		echo "run.sh: services did not restart after row $row" >&2
		break
	fi
done

echo
echo "==== fault table ($(git log -1 --format=%h 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ), $((${#rows[@]})) rows, $(($(date +%s) - t_start)) s) ===="
{
	printf 'row\tfault\tmentions\tlost\tduplicates\twindow errors\trecovery s\tresult\tnotes\n'
	for line in "${results[@]}"; do cut -f2- <<<"$line"; done
} | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9;
	if (NR == 1) print "|---|---|---:|---:|---:|---:|---:|---|---|" }'
echo
echo "$((${#rows[@]} - failed)) passed, $failed failed"
bash tests/harness/services.sh stop "$envfile" >/dev/null 2>&1
((failed == 0 && !keep)) && rm -rf "$scratch"
((failed == 0))
