#!/usr/bin/env bash
# check.sh - verifies docker/ with what runs on a machine without a Docker engine:
#   1. Dockerfile: two debian:bookworm-slim stages; every apt package exists in the Debian
#      archive (apt-cache policy); the build runs the project's cmake/ninja with options that
#      exist in CMakeLists.txt; the runtime stage installs the package of every shared library
#      the real binary needs (readelf NEEDED -> dpkg -S), runs as a non-root USER, has a
#      HEALTHCHECK on /healthz and EXPOSEs the http.port of flashpoint.conf, and its
#      ENTRYPOINT runs `flashpoint run -c` on the file it copies.
#   2. compose.yaml: `docker compose config` when the compose plugin exists (otherwise SKIP,
#      not counted as passed); structure: KRaft Kafka, Redis with appendonly, the init
#      container creates exactly the topics flashpoint.conf names, Flashpoint mounts that file
#      and the rules, and reaches Kafka and Redis by their service names.
# Usage: check.sh SOURCE_DIR FLASHPOINT_BINARY. Prints "ok", "FAIL" or "SKIP" per check and
# a summary; exits 1 if any check failed.
set -u
src=${1:?usage: check.sh SOURCE_DIR FLASHPOINT_BINARY}
bin=${2:?usage: check.sh SOURCE_DIR FLASHPOINT_BINARY}
df=$src/docker/Dockerfile
compose=$src/docker/compose.yaml
conf=$src/docker/flashpoint.conf
pass=0 fail=0 skip=0

ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
skipped() { echo "SKIP $*"; skip=$((skip + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

for f in "$df" "$compose" "$conf"; do [ -r "$f" ] || { echo "FAIL missing $f"; exit 1; }; done

# ---- Dockerfile ---------------------------------------------------------------------------
# Joins continuation lines, strips comments; prints the instructions of stage $1.
stage() {
  sed -e 's/^[[:space:]]*#.*$//' "$df" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' |
    awk -v want="$1" 'toupper($1) == "FROM" { cur = tolower($NF) } cur == want && NF { print }'
}
conf_get() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\(.*[^[:space:]]\)\{0,1\}[[:space:]]*$/\1/p" "$conf" | tail -1; }
packages() { stage "$1" | grep -o 'apt-get install[^&;]*' | tr ' ' '\n' | grep -v -e '^-' -e '^apt-get$' -e '^install$' -e '^$'; }

build=$(stage build) runtime=$(stage runtime)
check "two stages FROM debian:bookworm-slim AS build / AS runtime" \
  test "$(grep -ciE '^FROM debian:bookworm-slim AS (build|runtime)$' <(sed 's/[[:space:]]\{1,\}/ /g' "$df"))" = 2

# One apt-cache call for all packages (each call reads the whole cache: seconds).
policy=$(command -v apt-cache >/dev/null && apt-cache policy libc6 $(packages build) $(packages runtime) 2>/dev/null)
if grep -q 'Candidate: [0-9]' <<<"$policy"; then
  for p in $(packages build) $(packages runtime); do
    check "package $p exists in the Debian archive" \
      bash -c 'awk -v p="$1:" "\$0 == p { f = 1; next } /^[^ ]/ { f = 0 } f && /Candidate: [0-9]/ { ok = 1 } END { exit !ok }" <<<"$2"' _ "$p" "$policy"
  done
else
  skipped "apt-cache has no package lists here: package names not verified (not counted)"
fi

for p in cmake ninja-build pkg-config librdkafka-dev liblua5.4-dev libjansson-dev libyajl-dev libhiredis-dev libmicrohttpd-dev; do
  check "build stage installs $p" grep -qx "$p" <(packages build)
done
cmake_line=$(grep -o 'cmake -S[^&]*' <<<"$build" | head -1)
check "build stage configures with cmake -S . -B build -G Ninja" grep -q -- '-S \. -B build -G Ninja' <<<"$cmake_line"
for opt in $(grep -o -- '-DFP_[A-Z_]*' <<<"$cmake_line"); do
  check "cmake option ${opt#-D} exists in CMakeLists.txt" grep -q "option(${opt#-D} " "$src/CMakeLists.txt"
done
check "build stage builds with cmake --build" grep -q 'cmake --build build' <<<"$build"
check "build stage validates the rules it ships (flashpoint check)" grep -q 'flashpoint check rules' <<<"$build"

# Every shared library the real binary links must come from a package the runtime installs.
if [ -x "$bin" ] && command -v readelf >/dev/null && command -v dpkg >/dev/null; then
  rt_pkgs=$(packages runtime)
  for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
    pkg=$( { dpkg -S "$path" 2>/dev/null || dpkg -S "$(readlink -f "$path")" 2>/dev/null; } | head -1 | cut -d: -f1)
    case $lib in libasan.* | libubsan.* | libtsan.* | liblsan.*)
      echo "note sanitizer runtime $lib: this binary is a sanitizer build; the image is not"
      continue ;;
    esac
    case $pkg in
    libc6 | libgcc-s1) ok "runtime library $lib ($pkg, in the base image)" ;;
    '') bad "runtime library $lib: no Debian package owns $path" ;;
    *) check "runtime stage installs $pkg (for $lib)" grep -qx "$pkg" <<<"$rt_pkgs" ;;
    esac
  done
else
  bad "cannot inspect the binary $bin (readelf/dpkg missing or not built)"
fi

user=$(awk 'toupper($1) == "USER" { u = $2 } END { print u }' <<<"$runtime")
check "runtime stage runs as a non-root USER ($user)" test -n "$user" -a "$user" != root -a "$user" != 0
check "runtime stage creates the user $user" grep -q "useradd.* $user\$\|useradd.* $user " <<<"$runtime"
port=$(conf_get http.port)
check "flashpoint.conf serves HTTP on a fixed port ($port) on all interfaces" \
  test -n "$port" -a "$port" -gt 0 -a "$(conf_get http.addr)" = 0.0.0.0
check "runtime stage EXPOSEs http.port $port" grep -qE "^EXPOSE +$port\b" <<<"$runtime"
check "HEALTHCHECK hits /healthz on port $port with curl" grep -qE "^HEALTHCHECK .*curl.*127\.0\.0\.1:$port/healthz" <<<"$runtime"
check "runtime stage installs curl for the HEALTHCHECK" grep -qx curl <(packages runtime)
check "ENTRYPOINT runs flashpoint run -c /etc/flashpoint/flashpoint.conf" \
  grep -qE '^ENTRYPOINT \["flashpoint", "run", "-c", "/etc/flashpoint/flashpoint.conf"\]' <<<"$runtime"
check "runtime stage copies docker/flashpoint.conf to /etc/flashpoint/flashpoint.conf" \
  grep -q '^COPY docker/flashpoint.conf /etc/flashpoint/flashpoint.conf' <<<"$runtime"
check "runtime stage copies the rules to rules.dir ($(conf_get rules.dir))" \
  grep -qE "^COPY --from=build /src/rules/? $(conf_get rules.dir)/?$" <<<"$runtime"
check "runtime stage copies the binary built by the build stage" \
  grep -q '^COPY --from=build /src/build/flashpoint ' <<<"$runtime"

# ---- compose.yaml -------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
  check "docker compose config validates compose.yaml" docker compose -f "$compose" config -q
elif command -v docker-compose >/dev/null 2>&1; then
  check "docker-compose config validates compose.yaml" docker-compose -f "$compose" config -q
else
  skipped "no docker compose plugin here: compose.yaml not validated by docker (not counted as passed)"
fi

if command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
  out=$(python3 - "$compose" "$conf" <<'PY'
import re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
conf = {}
for line in open(sys.argv[2]):
    line = line.strip()
    if line and not line.startswith('#') and '=' in line:
        k, v = line.split('=', 1)
        conf[k.strip()] = v.strip()
s = doc.get('services', {})
def say(ok, what): print(('ok   ' if ok else 'FAIL ') + what)
say(set(s) >= {'kafka', 'kafka-init', 'redis', 'flashpoint'}, 'services kafka, kafka-init, redis, flashpoint')
k = s.get('kafka', {})
env = k.get('environment', {}) or {}
say(str(k.get('image', '')).startswith('apache/kafka:'), 'kafka uses the official apache/kafka image')
say('controller' in str(env.get('KAFKA_PROCESS_ROLES', '')) and 'broker' in str(env.get('KAFKA_PROCESS_ROLES', '')),
    'kafka runs in KRaft mode (broker,controller)')
adv = str(env.get('KAFKA_ADVERTISED_LISTENERS', ''))
say(conf.get('kafka.bootstrap.servers', '') in adv, 'kafka.bootstrap.servers (%s) is the advertised listener' % conf.get('kafka.bootstrap.servers'))
init = s.get('kafka-init', {})
script = ' '.join(init.get('command', []) if isinstance(init.get('command'), list) else [str(init.get('command', ''))])
created = set(re.findall(r'--topic\s+(\S+)', script))
wanted = set(t for t in conf.get('input.topics', '').split(',') if t) | {conf.get('output.topic'), conf.get('dlq.topic')}
say(created == wanted, 'kafka-init creates exactly the topics of flashpoint.conf (%s vs %s)' % (sorted(created), sorted(wanted)))
say((init.get('depends_on', {}).get('kafka', {}) or {}).get('condition') == 'service_healthy', 'kafka-init waits for a healthy broker')
r = s.get('redis', {})
cmd = r.get('command', [])
cmd = ' '.join(cmd) if isinstance(cmd, list) else str(cmd)
say(re.search(r'--appendonly\s+yes', cmd) is not None, 'redis runs with appendonly yes')
say(any(str(v).endswith(':/data') for v in r.get('volumes', [])), 'redis keeps /data in a volume')
say(conf.get('redis.host') == 'redis', 'redis.host is the compose service name')
f = s.get('flashpoint', {})
vols = [str(v) for v in f.get('volumes', [])]
say('./flashpoint.conf:/etc/flashpoint/flashpoint.conf:ro' in vols, 'flashpoint mounts docker/flashpoint.conf')
say(('../rules:%s:ro' % conf.get('rules.dir')) in vols, 'flashpoint mounts the example rules at rules.dir')
deps = f.get('depends_on', {})
say(deps.get('kafka-init', {}).get('condition') == 'service_completed_successfully', 'flashpoint starts after the topics exist')
say(deps.get('redis', {}).get('condition') == 'service_healthy', 'flashpoint starts after redis is healthy')
say(f.get('build', {}).get('dockerfile') == 'docker/Dockerfile' and f.get('build', {}).get('context') == '..', 'flashpoint builds docker/Dockerfile from the repository root')
ports = [str(p) for p in f.get('ports', [])]
say(ports == [conf.get('http.port')], 'flashpoint publishes http.port on an ephemeral host port (scales)')
say('container_name' not in f, 'no container_name on flashpoint (it would block --scale)')
say(not any(re.search(r'(?i)password\s*[:=]\s*\S', str(e)) for e in (f.get('environment') or {})), 'no literal secret in the flashpoint environment')
PY
)
  while IFS= read -r line; do
    case $line in ok*) ok "${line#ok   }" ;; FAIL*) bad "${line#FAIL }" ;; esac
  done <<<"$out"
else
  bad "python3 with PyYAML is needed to check compose.yaml's structure"
fi

echo "docker/check.sh: $pass passed, $fail failed, $skip skipped (skips are not passes)"
[ "$fail" -eq 0 ]
