#!/usr/bin/env bash
# soak.sh - the soak of issue #10 in one command (bench/SOAK.md).
#
#   bash bench/soak.sh              full: 15 min at half the peak, a fault every 3 min, on the
#                                   normal build (build-soak/), then a 5-minute LeakSanitizer
#                                   soak with the same four faults on the ASan build
#                                   (build-soak-asan/); about 25 minutes in all
#   bash bench/soak.sh --ci         about 2 minutes, one fault (Redis kill -9), on the build
#                                   given (a sanitizer build also gets the leak check)
# Options:
#   --minutes N          length of the measured soak (default 15; --ci: 2)
#   --build-dir DIR      build whose `flashpoint` is soaked (default build-soak; configured
#                        Release and built here if missing; an FP_SANITIZE=ON build is
#                        detected and checked for leaks too)
#   --asan-build-dir DIR the LeakSanitizer phase's build (default build-soak-asan, full run
#                        only; "none" skips the phase)
#   --rate R             mentions/s instead of a share of the calibrated peak
#   --fraction F         that share (default 0.5; --ci: 0.35)
#   --lsan-minutes N, --faults a,b, --fault-every S, --warmup S, --json FILE: see soak.py
# Starts its own Kafka broker and redis-server (tests/harness/services.sh) and stops them at
# the end. Exit 0 when every check passes, 1 otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

build_dir=$ROOT/build-soak
asan_dir=$ROOT/build-soak-asan
ci=0
args=()
while (($#)); do
	case $1 in
	--ci) ci=1; args+=("$1") ;;
	--build-dir) build_dir=$2; shift ;;
	--asan-build-dir) asan_dir=$2; shift ;;
	--minutes | --rate | --fraction | --lsan-minutes | --faults | --fault-every | --warmup | --json | --calib-n | \
		--rss-tol-mb | --rss-tol-pct | --rss-new-high-mb | --fd-tol | --backlog-cap)
		(($# >= 2)) || { echo "soak.sh: $1 needs an argument" >&2; exit 2; }
		args+=("$1" "$2")
		shift
		;;
	-h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "soak.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ $build_dir == /* ]] || build_dir=$PWD/$build_dir
[[ $asan_dir == /* || $asan_dir == none ]] || asan_dir=$PWD/$asan_dir

# build DIR CMAKE_ARGS...: configure if needed, build the engine and its library
build() {
	local dir=$1
	shift
	if [[ ! -f $dir/CMakeCache.txt ]]; then
		cmake -S "$ROOT" -B "$dir" -G Ninja "$@" >/dev/null
	fi
	ninja -C "$dir" flashpoint fpengine >/dev/null
}

build "$build_dir" -DCMAKE_BUILD_TYPE=Release
if ((ci == 0)) && [[ $asan_dir != none ]]; then
	build "$asan_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFP_SANITIZE=ON
	args+=(--asan-build-dir "$asan_dir")
fi

# the soak's C tool (producer, offsets, accounting), linked against the engine library of
# the build dir (its generator is the benchmark's); built without sanitizers unless the
# library was
tool=$build_dir/soak/soak
san=()
grep -q '^FP_SANITIZE:BOOL=ON$' "$build_dir/CMakeCache.txt" && san=(-fsanitize=address,undefined)
if [[ ! -x $tool || $HERE/soak.c -nt $tool || $HERE/stream.h -nt $tool || $build_dir/libfpengine.a -nt $tool ]]; then
	mkdir -p "$build_dir/soak"
	# shellcheck disable=SC2046
	cc -O2 -g -std=c11 -D_GNU_SOURCE "${san[@]}" -Wall -Wextra -Wshadow -Wstrict-prototypes \
		-Wmissing-prototypes -Wformat=2 -I"$ROOT/include" -I"$ROOT/engine" "$HERE/soak.c" \
		-o "$tool" "$build_dir/libfpengine.a" \
		$(pkg-config --libs rdkafka lua5.4 jansson hiredis libmicrohttpd zlib) -lm -lpthread
fi

exec python3 "$HERE/soak.py" --build-dir "$build_dir" --tool "$tool" "${args[@]}"
