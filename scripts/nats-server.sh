#!/usr/bin/env bash
# Make sure a nats-server binary is there for bacalhau-py's NATS tests and benchmarks.
#
# Usage:
#   eval "$(scripts/nats-server.sh ensure)"   # prints export lines on stdout
#   scripts/nats-server.sh path               # prints the binary's path, or fails
#
# `ensure` looks for nats-server ($BACALHAU_NATS_SERVER, PATH, /usr/sbin, /usr/bin,
# /usr/local/bin). When it is missing and we are root, it installs Debian's package
# `nats-server` with apt-get. On success stdout holds only `export NAME=value` lines:
# BACALHAU_NATS_SERVER (the binary) and BACALHAU_REQUIRE_NATS=1 (so the NATS tests fail
# instead of skipping if the binary goes missing later). On failure it prints nothing on
# stdout, explains on stderr and exits non-zero, so `eval "$(... ensure)"` leaves the
# environment alone and the NATS tests skip with a visible reason.
#
# The tests start their own servers on free loopback ports (bacalhau/testing/nats.py);
# this script starts none.
set -euo pipefail

log() { printf 'nats-server.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

find_binary() {
    local candidate
    for candidate in "${BACALHAU_NATS_SERVER:-}" "$(command -v nats-server 2>/dev/null || true)" \
        /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

install_package() {
    [ "$(id -u)" -eq 0 ] || die "nats-server is missing and we are not root: install Debian's nats-server package"
    command -v apt-get >/dev/null 2>&1 || die "nats-server is missing and there is no apt-get to install it"
    log "installing Debian's nats-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || log "apt-get update failed; trying the install anyway"
    apt-get install -y -qq --no-install-recommends nats-server >&2 || die "apt-get install nats-server failed"
}

cmd_ensure() {
    local binary
    if ! binary="$(find_binary)"; then
        install_package
        binary="$(find_binary)" || die "nats-server still not found after installing it"
    fi
    "$binary" --version >&2 || die "$binary does not run"
    printf 'export BACALHAU_NATS_SERVER=%q\n' "$binary"
    printf 'export BACALHAU_REQUIRE_NATS=1\n'
}

cmd_path() {
    find_binary || die "no nats-server found (run: scripts/nats-server.sh ensure, as root)"
}

case "${1:-ensure}" in
    ensure) cmd_ensure ;;
    path) cmd_path ;;
    *) die "usage: $0 [ensure|path]" ;;
esac
