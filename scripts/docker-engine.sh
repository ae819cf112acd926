#!/usr/bin/env bash
# Provision (and tear down) a private Docker engine for bacalhau-py's docker tests.
#
# Usage:
#   eval "$(scripts/docker-engine.sh start [STATE_DIR])"   # prints export lines on stdout
#   scripts/docker-engine.sh stop [STATE_DIR]
#   scripts/docker-engine.sh status [STATE_DIR]
#
# STATE_DIR defaults to $BACALHAU_DOCKER_STATE, else /tmp/bacalhau-docker. It holds the
# daemon's socket, pidfile, log, data root (vfs storage) and exec root, so the engine
# touches nothing of a system Docker: no docker0 bridge, no iptables rules.
#
# `start`, when run as root, installs the Debian packages docker.io and busybox-static if
# dockerd or busybox is missing, starts dockerd on unix://STATE_DIR/docker.sock, waits
# until it answers, and imports a tiny busybox image (bacalhau-test/busybox:latest, or
# $BACALHAU_TEST_IMAGE) built from /bin/busybox and its applet symlinks. If the engine
# is already running it is reused. The image is also tagged busybox:latest (when no busybox
# image is there), the name the docs' examples use. Not root: an engine already answering at DOCKER_HOST
# (or the default socket) is used instead, with the image imported into it.
#
# On success stdout holds only `export NAME=value` lines (DOCKER_HOST, BACALHAU_TEST_IMAGE,
# BACALHAU_DOCKER_STATE, BACALHAU_REQUIRE_DOCKER=1); everything else goes to stderr.
# On failure it prints nothing on stdout, explains on stderr and exits non-zero, so
# `eval "$(... start)"` leaves the environment alone and the docker tests skip visibly.
#
# The engine listens on a unix socket inside STATE_DIR only (no TCP port, no bridge), and
# STATE_DIR is private to the caller (scripts/test.sh makes it with mktemp), so two engines
# can never collide on an address ("address already in use" cannot happen here).
#
# `stop` kills the daemon named by the pidfile (and only it), waits for it to exit,
# unmounts anything left under STATE_DIR and removes STATE_DIR.
set -euo pipefail

IMAGE="${BACALHAU_TEST_IMAGE:-bacalhau-test/busybox:latest}"
WAIT_SECONDS="${BACALHAU_DOCKER_WAIT:-60}"

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

state_dir() {
    local dir="${1:-${BACALHAU_DOCKER_STATE:-/tmp/bacalhau-docker}}"
    realpath -m "$dir"
}

answers() {
    # answers HOST: true when a Docker engine responds at HOST (a DOCKER_HOST value).
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

install_packages() {
    local need=()
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker >/dev/null 2>&1 || need+=(docker.io)
    busybox_path >/dev/null 2>&1 || need+=(busybox-static)
    [ "${#need[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || log "apt-get update failed; trying the install anyway"
    # shellcheck disable=SC2046  # word splitting of the de-duplicated list is wanted
    apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >&2 \
        || die "apt-get install ${need[*]} failed"
}

busybox_path() {
    # A statically linked busybox (a dynamic one would need its libc inside the image).
    local candidate
    for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if file_is_static "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

file_is_static() {
    # ldd says "not a dynamic executable" (static) or "statically linked" (static-pie).
    local out
    out="$(ldd "$1" 2>&1 || true)"  # ldd exits 1 for static binaries
    case "$out" in
        *"not a dynamic executable"* | *"statically linked"*) return 0 ;;
        *) return 1 ;;
    esac
}

tag_busybox() {
    # The docs' examples name `busybox`, as Docker's own do: give the imported image that
    # name too (unless a real busybox image is there), so they run without a registry.
    local host="$1"
    if ! DOCKER_HOST="$host" docker image inspect busybox:latest >/dev/null 2>&1; then
        DOCKER_HOST="$host" docker tag "$IMAGE" busybox:latest >&2 \
            && log "tagged $IMAGE as busybox:latest"
    fi
}

build_image() {
    local host="$1" state="$2"
    if DOCKER_HOST="$host" docker image inspect "$IMAGE" >/dev/null 2>&1; then
        log "image $IMAGE already present"
        tag_busybox "$host"
        return 0
    fi
    local bb rootfs
    bb="$(busybox_path)" || die "no statically linked busybox found (install busybox-static)"
    rootfs="$state/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/root"
    chmod 1777 "$rootfs/tmp"
    cp "$bb" "$rootfs/bin/busybox"
    local applet
    for applet in $("$bb" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    log "importing $IMAGE from $bb"
    tar -C "$rootfs" -c . | DOCKER_HOST="$host" docker import \
        --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >&2 \
        || die "docker import of $IMAGE failed"
    rm -rf "$rootfs"
    tag_busybox "$host"
}

print_exports() {
    local host="$1" state="$2"
    printf 'export DOCKER_HOST=%q\n' "$host"
    printf 'export BACALHAU_TEST_IMAGE=%q\n' "$IMAGE"
    printf 'export BACALHAU_DOCKER_STATE=%q\n' "$state"
    printf 'export BACALHAU_REQUIRE_DOCKER=1\n'
}

daemon_pid() {
    # The pid in STATE/dockerd.pid if that process is alive and is a dockerd.
    local pidfile="$1/dockerd.pid" pid
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

cmd_start() {
    local state host
    state="$(state_dir "${1:-}")"
    mkdir -p "$state"
    host="unix://$state/docker.sock"
    if [ "$(id -u)" -ne 0 ]; then
        local existing="${DOCKER_HOST:-unix:///var/run/docker.sock}"
        command -v docker >/dev/null 2>&1 || die "not root and no docker client: cannot provision"
        answers "$existing" || die "not root, so no private engine; none answers at $existing"
        log "not root: using the engine at $existing"
        build_image "$existing" "$state"
        print_exports "$existing" "$state"
        return 0
    fi
    if daemon_pid "$state" >/dev/null && answers "$host"; then
        log "reusing the engine already running at $host"
    else
        install_packages
        [ "${#host}" -lt 100 ] || die "state dir path too long for a unix socket: $state"
        rm -f "$state/docker.sock" "$state/dockerd.pid"
        mkdir -p "$state/root" "$state/exec"
        log "starting dockerd (vfs) at $host; log in $state/dockerd.log"
        # setsid: the daemon outlives this script and ignores the caller's job control.
        setsid dockerd \
            --host "$host" \
            --data-root "$state/root" \
            --exec-root "$state/exec" \
            --pidfile "$state/dockerd.pid" \
            --storage-driver vfs \
            --bridge none \
            --iptables=false \
            --ip-masq=false \
            --ip-forward=false \
            --shutdown-timeout 3 \
            --log-level warn \
            </dev/null >"$state/dockerd.log" 2>&1 &
        local launched=$! waited=0
        until answers "$host"; do
            if ! kill -0 "$launched" 2>/dev/null; then
                tail -n 20 "$state/dockerd.log" >&2 || true
                die "dockerd exited during start-up (log above, full log in $state/dockerd.log)"
            fi
            waited=$((waited + 1))
            if [ "$waited" -ge $((WAIT_SECONDS * 4)) ]; then
                tail -n 20 "$state/dockerd.log" >&2 || true
                kill "$launched" 2>/dev/null || true
                die "dockerd did not answer within ${WAIT_SECONDS}s"
            fi
            sleep 0.25
        done
        log "dockerd answers (pid $launched)"
    fi
    build_image "$host" "$state"
    print_exports "$host" "$state"
}

cmd_stop() {
    local state pid
    state="$(state_dir "${1:-}")"
    if pid="$(daemon_pid "$state")"; then
        local host="unix://$state/docker.sock" leftovers
        # Containers that ignore SIGTERM would hold dockerd's shutdown for seconds each.
        if leftovers="$(DOCKER_HOST="$host" timeout 10 docker ps -aq 2>/dev/null)" \
                && [ -n "$leftovers" ]; then
            log "removing $(echo "$leftovers" | wc -l) container(s) left on the engine"
            # shellcheck disable=SC2086  # one id per word
            DOCKER_HOST="$host" timeout 60 docker rm -f -v $leftovers >/dev/null 2>&1 || true
        fi
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            waited=$((waited + 1))
            if [ "$waited" -ge 120 ]; then
                log "dockerd (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.25
        done
    else
        log "no dockerd running for $state"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        # Unmount leftovers (netns bind mounts, container rootfs) deepest first.
        awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r \
            | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    fi
    case "$state" in
        /|/tmp|/root|/home|"") die "refusing to remove $state" ;;
    esac
    rm -rf "$state" || log "could not remove all of $state"
}

cmd_status() {
    local state pid
    state="$(state_dir "${1:-}")"
    if pid="$(daemon_pid "$state")" && answers "unix://$state/docker.sock"; then
        echo "running: pid $pid at unix://$state/docker.sock"
    else
        echo "not running ($state)"
        return 1
    fi
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    *) die "usage: $0 start|stop|status [STATE_DIR]" ;;
esac
