#!/usr/bin/env bash
# setup.sh: makes a Debian 12 machine able to build Flashpoint and run every test tier.
#
# Idempotent and fast when nothing is missing (dpkg-query only, no apt, no network):
#   1. installs the missing Debian packages (one apt-get update, one apt-get install);
#   2. stops a redis-server the package's init scripts may have started (the tests run
#      their own on free ports, see services.sh) and keeps it from starting at boot;
#   3. fetches the Kafka broker jars into ${FP_CACHE_DIR:-$HOME/.cache/flashpoint} (mvn),
#      unless --no-kafka is given (the demo needs no broker: it embeds librdkafka's mock).
# Needs root (or sudo) only when something must be installed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fetch_kafka=1
for arg in "$@"; do
	case $arg in
	--no-kafka) fetch_kafka=0 ;;
	*) printf 'setup.sh: unknown option %s (usage: setup.sh [--no-kafka])\n' "$arg" >&2; exit 2 ;;
	esac
done
PACKAGES=(build-essential cmake ninja-build pkg-config librdkafka-dev liblua5.4-dev lua5.4 chromium
	libjansson-dev libyajl-dev libhiredis-dev libmicrohttpd-dev zlib1g-dev libjemalloc-dev redis-server kcat clang
	libclang-rt-14-dev openjdk-17-jre-headless maven python3 python3-jsonschema python3-yaml
	binutils)

log() { printf 'setup.sh: %s\n' "$*" >&2; }

declare -A installed=()
while read -r pkg status; do
	[[ $status == ii* ]] && installed[$pkg]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for pkg in "${PACKAGES[@]}"; do
	[[ -n ${installed[$pkg]:-} ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
	SUDO=
	if ((EUID != 0)); then
		command -v sudo >/dev/null || { log "need root to install: ${missing[*]}"; exit 1; }
		SUDO=sudo
	fi
	log "installing: ${missing[*]}"
	redis_was_installed=0
	[[ -n ${installed[redis-server]:-} ]] && redis_was_installed=1
	# policy-rc.d exit 101 keeps maintainer scripts from starting services (redis-server);
	# only ours, only for this install.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 755 "$policy"
		own_policy=1
	fi
	trap 'if [[ $own_policy == 1 ]]; then $SUDO rm -f "$policy"; fi' EXIT
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -q
	$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
	if [[ $own_policy == 1 ]]; then $SUDO rm -f "$policy"; own_policy=0; fi

	# Belt and braces: if a system redis-server came up anyway, stop and disable it.
	if [[ $redis_was_installed == 0 ]]; then
		if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
			$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
		else
			$SUDO service redis-server stop >/dev/null 2>&1 || true
			command -v update-rc.d >/dev/null && $SUDO update-rc.d redis-server disable >/dev/null 2>&1 || true
		fi
		if [[ -f /run/redis/redis-server.pid ]]; then
			$SUDO kill "$(cat /run/redis/redis-server.pid)" 2>/dev/null || true
		fi
	fi
fi

if ((fetch_kafka)); then
	bash "$HERE/services.sh" fetch
fi
