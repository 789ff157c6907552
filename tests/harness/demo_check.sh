#!/usr/bin/env bash
# demo_check.sh FLASHPOINT - the README's main command, as a test: `flashpoint demo` must
# finish by itself (exit 0) with every mention processed, the malformed ones dead-lettered
# and incidents opened. It once waited out its 300 s deadline: the embedded mock broker had
# dropped the oldest mentions (it keeps a few MB per partition) and the demo waited for them.
set -euo pipefail
bin=${1:?usage: demo_check.sh FLASHPOINT}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
t0=$(date +%s)
rc=0
timeout 240 "$bin" demo >"$out" 2>&1 || rc=$?
secs=$(($(date +%s) - t0))
fail() {
	echo "demo_check: $*" >&2
	tail -n 20 "$out" >&2
	exit 1
}
((rc == 0)) || fail "exit code $rc after $secs s"
produced=$(sed -n 's/^produced \([0-9]*\) mentions.*/\1/p' "$out")
dropped=$(sed -n 's/^demo: the embedded broker dropped the oldest \([0-9]*\).*/\1/p' "$out")
line=$(grep '^processed ' "$out") || fail "no summary line"
[[ $line =~ ^processed\ ([0-9]+)\ mentions\ \(([0-9]+)\ dead-lettered.*\(([0-9]+)\ opened ]] ||
	fail "summary not understood: $line"
processed=${BASH_REMATCH[1]} dlq=${BASH_REMATCH[2]} opened=${BASH_REMATCH[3]}
[[ -n $produced ]] || fail "no 'produced' line"
((processed == produced - ${dropped:-0})) || fail "processed $processed of $produced (dropped ${dropped:-0})"
[[ -z $dropped ]] || fail "the embedded broker dropped $dropped mentions of the default demo"
((dlq == 3)) || fail "dead-lettered $dlq, expected the 3 malformed messages"
((opened > 0)) || fail "no incident opened"
grep -q '^  opened ' "$out" || fail "no incident printed"
echo "demo_check: $processed mentions, $dlq dead-lettered, $opened opened, exit 0 in $secs s"
