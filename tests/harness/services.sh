#!/usr/bin/env bash
# services.sh: the real Redis and Kafka the redis/ and kafka/ test tiers run against.
#
#   services.sh start ENVFILE          start redis-server and a Kafka 4.3.1 KRaft broker
#   services.sh stop ENVFILE           stop both, remove the scratch dir and ENVFILE
#   services.sh kill-redis ENVFILE     kill -9 redis-server (data dir kept)
#   services.sh start-redis ENVFILE    start it again on the same port and data dir
#   services.sh restart-redis ENVFILE  kill-redis + start-redis
#   services.sh kill-kafka ENVFILE     kill -9 the broker (log dirs kept)
#   services.sh start-kafka ENVFILE    start it again on the same ports and log dirs
#   services.sh restart-kafka ENVFILE  kill-kafka + start-kafka
#   services.sh fetch                  fetch the Kafka jars into the cache if missing
#
# Both services listen on free loopback ports chosen at start and live in one scratch dir
# (${TMPDIR:-/tmp}/fp-services.XXXXXX). ENVFILE is shell-sourceable KEY=VALUE lines that the
# C harness (testlib.c, fpt_services_load) reads; it is rewritten atomically after every
# command that changes a pid. Every command that starts something waits until the service
# answers (redis PING, kcat -L showing the broker) or fails with the log tail.
#
# Invariant: the pids in ENVFILE are the only processes this script ever signals, and only
# after checking that /proc/PID/cmdline still names our scratch dir or port (no pid reuse
# accidents). `start` on an ENVFILE whose services are still up stops them first.
set -euo pipefail

KAFKA_VERSION=4.3.1
SLF4J_VERSION=2.0.16
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${FP_CACHE_DIR:-$HOME/.cache/flashpoint}
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_HOME/libs
# Maven resolves slf4j-api 1.7.x (Kafka's) over the 2.x that log4j-slf4j2-impl needs, which
# silences the broker's logging; a 2.x jar in its own dir goes first on the class path.
KAFKA_SLF4J=$KAFKA_HOME/slf4j2
KAFKA_READY_S=${FP_KAFKA_READY_TIMEOUT:-90}
REDIS_READY_S=${FP_REDIS_READY_TIMEOUT:-20}
STOP_GRACE_S=${FP_STOP_GRACE:-8}

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------
# Kafka jars
# ---------------------------------------------------------------------------------------
jars_present() {
	compgen -G "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null &&
		compgen -G "$KAFKA_LIBS/kafka-server-$KAFKA_VERSION.jar" >/dev/null &&
		compgen -G "$KAFKA_LIBS/log4j-core-*.jar" >/dev/null &&
		compgen -G "$KAFKA_LIBS/log4j-slf4j2-impl-*.jar" >/dev/null &&
		compgen -G "$KAFKA_SLF4J/slf4j-api-2.*.jar" >/dev/null
}

cmd_fetch() {
	fetch_jars
	cds_train
}

fetch_jars() {
	jars_present && return 0
	command -v mvn >/dev/null || die "mvn not found (run tests/harness/setup.sh)"
	log "fetching Kafka $KAFKA_VERSION jars into $KAFKA_LIBS"
	mkdir -p "$KAFKA_LIBS" "$KAFKA_SLF4J"
	mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$KAFKA_LIBS" || die "mvn copy-dependencies failed"
	mvn -q -B -f "$HERE/pom.xml" dependency:copy \
		-Dartifact="org.slf4j:slf4j-api:$SLF4J_VERSION" -DoutputDirectory="$KAFKA_SLF4J" ||
		die "mvn copy slf4j-api failed"
	jars_present || die "jars still missing in $KAFKA_LIBS after mvn"
}

kafka_cp() { printf '%s/*:%s/*' "$KAFKA_SLF4J" "$KAFKA_LIBS"; }

# A class-data-sharing archive of the broker's classes cuts its start-up by ~1 s (of ~4).
# Made once per JVM binary by cds_train (from `fetch`); a stale or missing archive only
# costs that second: the JVM ignores an archive that does not match (-Xshare:auto).
cds_file() {
	local java_bin
	java_bin=$(readlink -f "$(command -v java)")
	printf '%s/cds-%s.jsa' "$KAFKA_HOME" \
		"$(printf '%s %s %s' "$java_bin" "$(stat -c %Y "$java_bin")" "$(kafka_cp)" | md5sum | cut -c1-12)"
}

cds_train() {
	local jsa tmp
	command -v java >/dev/null && command -v kcat >/dev/null && command -v python3 >/dev/null ||
		return 0
	jsa=$(cds_file)
	[[ -f $jsa ]] && return 0
	log "training the broker's class-data-sharing archive (once)"
	tmp="$jsa.tmp.$$"
	(
		SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/fp-services.XXXXXX")
		trap 'rm -rf "$SCRATCH"' EXIT
		read -r REDIS_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT <<<"$(free_ports 3)"
		KAFKA_CDS_OPT="-XX:ArchiveClassesAtExit=$tmp"
		kafka_write_config
		kafka_format
		kafka_spawn
		kafka_wait || { stop_pid "$KAFKA_PID" "$(kafka_pattern)" KILL; exit 1; }
		STOP_GRACE_S=60 stop_pid "$KAFKA_PID" "$(kafka_pattern)" TERM
	) >/dev/null 2>&1 || true
	if [[ -s $tmp ]]; then mv -f "$tmp" "$jsa"; else
		rm -f "$tmp"
		log "warning: no class-data-sharing archive (broker starts ~1 s slower)"
	fi
}

kafka_cds_opt() {
	if [[ -n ${KAFKA_CDS_OPT:-} ]]; then
		printf '%s' "$KAFKA_CDS_OPT"
	elif [[ -f $(cds_file) ]]; then
		printf -- '-XX:SharedArchiveFile=%s' "$(cds_file)"
	else
		printf -- '-Xshare:auto'
	fi
}

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------
# Prints N free loopback TCP ports, all bound at once so they are distinct.
free_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# pid_matches PID PATTERN: the process exists and its command line contains PATTERN.
pid_matches() {
	local pid=$1 pat=$2 cmdline
	[[ -n $pid && $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$pat"* ]]
}

# wait_gone PID PATTERN SECONDS: 0 once the process is gone, 1 on deadline.
wait_gone() {
	local pid=$1 pat=$2 end=$(($(now_ms) + $3 * 1000))
	while pid_matches "$pid" "$pat"; do
		# A zombie counts as gone: its parent (not us) reaps it.
		[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
		(($(now_ms) < end)) || return 1
		sleep 0.05
	done
}

# stop_pid PID PATTERN SIGNAL_FIRST: signal, then KILL after the grace period.
stop_pid() {
	local pid=$1 pat=$2 sig=$3
	pid_matches "$pid" "$pat" || return 0
	kill -s "$sig" "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$pat" "$STOP_GRACE_S"; then
		log "pid $pid did not exit on $sig, sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" "$pat" 10 || log "warning: pid $pid still alive after KILL"
	fi
}

write_env() {
	local tmp="$ENVFILE.tmp.$$"
	cat >"$tmp" <<EOF
# Written by tests/harness/services.sh; sourced by shell scripts, read by testlib.c.
FP_TEST_SCRATCH=$SCRATCH
FP_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
FP_TEST_KAFKA_PORT=$KAFKA_PORT
FP_TEST_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
FP_TEST_KAFKA_PID=$KAFKA_PID
FP_TEST_KAFKA_LOG=$SCRATCH/kafka/kafka.log
FP_TEST_REDIS_HOST=127.0.0.1
FP_TEST_REDIS_PORT=$REDIS_PORT
FP_TEST_REDIS_PID=$REDIS_PID
FP_TEST_REDIS_LOG=$SCRATCH/redis/redis.log
FP_TEST_SERVICES_SH=$HERE/services.sh
EOF
	mv -f "$tmp" "$ENVFILE"
}

load_env() {
	[[ -f $ENVFILE ]] || die "no env file $ENVFILE (run: services.sh start $ENVFILE)"
	local line k v
	while IFS= read -r line; do
		[[ $line =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
		k=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
		case $k in
		FP_TEST_SCRATCH) SCRATCH=$v ;;
		FP_TEST_KAFKA_PORT) KAFKA_PORT=$v ;;
		FP_TEST_KAFKA_CONTROLLER_PORT) KAFKA_CONTROLLER_PORT=$v ;;
		FP_TEST_KAFKA_PID) KAFKA_PID=$v ;;
		FP_TEST_REDIS_PORT) REDIS_PORT=$v ;;
		FP_TEST_REDIS_PID) REDIS_PID=$v ;;
		esac
	done <"$ENVFILE"
	[[ -n ${SCRATCH:-} && -n ${KAFKA_PORT:-} && -n ${REDIS_PORT:-} ]] ||
		die "env file $ENVFILE is incomplete"
}

tail_log() {
	local f=$1
	[[ -f $f ]] || return 0
	log "---- last lines of $f ----"
	tail -n "${2:-40}" "$f" >&2 || true
	log "---- end of $f ----"
}

# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------
redis_pattern() { printf ':%s' "$REDIS_PORT"; }   # redis-server retitles itself "... 127.0.0.1:PORT"

redis_spawn() {
	local d=$SCRATCH/redis
	mkdir -p "$d"
	rm -f "$d/redis.pid"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$d" \
		--appendonly yes --appendfsync always --save "" \
		--hll-sparse-max-bytes 12000 \
		--enable-debug-command local --daemonize yes \
		--pidfile "$d/redis.pid" --logfile "$d/redis.log" </dev/null >>"$d/redis.log" 2>&1 ||
		{ tail_log "$d/redis.log"; die "redis-server failed to start"; }
}

redis_wait() {
	local d=$SCRATCH/redis end=$(($(now_ms) + REDIS_READY_S * 1000))
	while :; do
		if [[ -s $d/redis.pid ]] &&
			[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
			REDIS_PID=$(<"$d/redis.pid")
			return 0
		fi
		if (($(now_ms) > end)); then
			tail_log "$d/redis.log"
			log "redis-server not ready on 127.0.0.1:$REDIS_PORT after ${REDIS_READY_S}s"
			return 1
		fi
		sleep 0.05
	done
}

redis_kill() {
	if pid_matches "${REDIS_PID:-}" "$(redis_pattern)"; then
		kill -KILL "$REDIS_PID" 2>/dev/null || true
		wait_gone "$REDIS_PID" "$(redis_pattern)" 10 || die "redis pid $REDIS_PID survived KILL"
	fi
	REDIS_PID=
}

# ---------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------
kafka_pattern() { printf '%s/kafka/server.properties' "$SCRATCH"; }

kafka_write_config() {
	local d=$SCRATCH/kafka
	mkdir -p "$d/data"
	cat >"$d/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.ak.name = org.apache.kafka
logger.ak.level = INFO
logger.cfg.name = org.apache.kafka.common.config
logger.cfg.level = WARN
EOF
	cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
message.max.bytes=8388608
replica.fetch.max.bytes=8388608
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
# After kill -9 the restarted controller refuses the broker's new registration until the old
# one's session expires (DUPLICATE_BROKER_REGISTRATION): keep that wait short for fault tests.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
# The controller appends a no-op record to the metadata log every 500 ms by default (so
# brokers see a live quorum); on one node that kept the raft thread at 4% of a core idle.
metadata.max.idle.interval.ms=5000
EOF
}

# Formatting costs a JVM start (~2 s). The formatted dir does not depend on ports or paths
# (meta.properties: cluster id, node id, dir id; bootstrap.checkpoint: feature levels), so
# one is made once per cache and copied.
kafka_format() {
	local d=$SCRATCH/kafka tpl=$KAFKA_HOME/formatted-v1
	if [[ ! -f $tpl/meta.properties ]]; then
		local tmp="$tpl.tmp.$$" id
		rm -rf "$tmp"
		mkdir -p "$tmp"
		sed "s|^log.dirs=.*|log.dirs=$tmp|" "$d/server.properties" >"$tmp.properties"
		id=$(python3 -c 'import base64,os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    if s[0] not in "-_": print(s); break')
		java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$(kafka_cp)" \
			-Dlog4j2.configurationFile="file:$d/log4j2.properties" \
			kafka.tools.StorageTool format -t "$id" -c "$tmp.properties" \
			>"$d/format.log" 2>&1 || { tail_log "$d/format.log"; die "kafka StorageTool format failed"; }
		rm -f "$tmp.properties"
		if ! mv -T "$tmp" "$tpl" 2>/dev/null; then rm -rf "$tmp"; fi   # lost a race: fine
	fi
	cp -a "$tpl/." "$d/data/"
}

kafka_spawn() {
	local d=$SCRATCH/kafka
	rm -f "$d/kafka.pid"
	# setsid: own session, so a ctest/terminal signal to our group does not reach it.
	# The inner shell records its pid, then execs the JVM (same pid).
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$d/kafka.pid" \
		java -Xms256m -Xmx768m -XX:+UseSerialGC -Djava.awt.headless=true "$(kafka_cds_opt)" \
		-cp "$(kafka_cp)" -Dlog4j2.configurationFile="file:$d/log4j2.properties" \
		-Dkafka.logs.dir="$d/logs" kafka.Kafka "$d/server.properties" \
		</dev/null >>"$d/kafka.log" 2>&1 &
	local end=$(($(now_ms) + 5000))
	while [[ ! -s $d/kafka.pid ]]; do
		(($(now_ms) < end)) || die "kafka pid file not written"
		sleep 0.02
	done
	KAFKA_PID=$(<"$d/kafka.pid")
}

kafka_wait() {
	local d=$SCRATCH/kafka end=$(($(now_ms) + KAFKA_READY_S * 1000))
	while :; do
		if ! pid_matches "$KAFKA_PID" "$(kafka_pattern)"; then
			tail_log "$d/kafka.log" 60
			log "kafka broker (pid $KAFKA_PID) exited during start-up"
			return 1
		fi
		if kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 1 2>/dev/null | grep -q ' 1 brokers:'; then
			return 0
		fi
		if (($(now_ms) > end)); then
			tail_log "$d/kafka.log" 60
			log "kafka broker not ready on 127.0.0.1:$KAFKA_PORT after ${KAFKA_READY_S}s"
			return 1
		fi
		sleep 0.1
	done
}

kafka_kill() {
	if pid_matches "${KAFKA_PID:-}" "$(kafka_pattern)"; then
		kill -KILL "$KAFKA_PID" 2>/dev/null || true
		wait_gone "$KAFKA_PID" "$(kafka_pattern)" 10 || die "kafka pid $KAFKA_PID survived KILL"
	fi
	KAFKA_PID=
}

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------
cmd_stop() {
	[[ -f $ENVFILE ]] || return 0
	load_env
	# Both at once: TERM, then KILL after the grace period.
	stop_pid "${KAFKA_PID:-}" "$(kafka_pattern)" TERM &
	local kp=$!
	stop_pid "${REDIS_PID:-}" "$(redis_pattern)" TERM
	wait "$kp" || true
	case $SCRATCH in
	*/fp-services.*) rm -rf "$SCRATCH" ;;
	*) log "warning: not removing unexpected scratch dir '$SCRATCH'" ;;
	esac
	rm -f "$ENVFILE"
}

cmd_start() {
	local t0 ports
	t0=$(now_ms)
	if [[ -f $ENVFILE ]]; then
		log "stopping services left over in $ENVFILE"
		cmd_stop
		unset SCRATCH KAFKA_PID REDIS_PID KAFKA_PORT REDIS_PORT KAFKA_CONTROLLER_PORT
	fi
	for tool in redis-server redis-cli kcat java python3; do
		command -v "$tool" >/dev/null || die "$tool not found (run tests/harness/setup.sh)"
	done
	cmd_fetch
	mkdir -p "$(dirname "$ENVFILE")"
	SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/fp-services.XXXXXX")
	read -r REDIS_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT <<<"$(free_ports 3)"
	KAFKA_PID= REDIS_PID=
	# The env file exists from here on, so `stop` can clean up whatever a failure leaves.
	write_env
	trap 'if [[ -z ${START_OK:-} ]]; then log "start failed; cleaning up"; cmd_stop; fi' EXIT
	kafka_write_config
	kafka_format
	kafka_spawn
	write_env
	redis_spawn
	redis_wait || false
	write_env
	kafka_wait || false
	write_env
	START_OK=1
	log "redis 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), kafka 127.0.0.1:$KAFKA_PORT" \
		"(pid $KAFKA_PID) ready in $(($(now_ms) - t0)) ms; scratch $SCRATCH"
}

cmd_kill_redis() { load_env; redis_kill; write_env; }
cmd_start_redis() {
	load_env
	if pid_matches "${REDIS_PID:-}" "$(redis_pattern)"; then
		log "redis already running (pid $REDIS_PID)"
		return 0
	fi
	redis_spawn
	redis_wait || die "redis restart failed"
	write_env
}
cmd_kill_kafka() { load_env; kafka_kill; write_env; }
cmd_start_kafka() {
	local t0
	t0=$(now_ms)
	load_env
	if pid_matches "${KAFKA_PID:-}" "$(kafka_pattern)"; then
		log "kafka already running (pid $KAFKA_PID)"
		return 0
	fi
	kafka_spawn
	write_env
	kafka_wait || die "kafka restart failed"
	log "kafka back on 127.0.0.1:$KAFKA_PORT (pid $KAFKA_PID) in $(($(now_ms) - t0)) ms"
}

usage() {
	sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

CMD=${1:-}
if [[ $CMD == fetch ]]; then
	cmd_fetch
	exit 0
fi
[[ $# -eq 2 ]] || usage
ENVFILE=$2
[[ $ENVFILE == /* ]] || ENVFILE=$PWD/$ENVFILE
case $CMD in
start) cmd_start ;;
stop) cmd_stop ;;
kill-redis) cmd_kill_redis ;;
start-redis) cmd_start_redis ;;
restart-redis) cmd_kill_redis && cmd_start_redis ;;
kill-kafka) cmd_kill_kafka ;;
start-kafka) cmd_start_kafka ;;
restart-kafka) cmd_kill_kafka && cmd_start_kafka ;;
*) usage ;;
esac
