#!/usr/bin/env bash
# Run the whole test suite on a fresh machine, provisioning what the tests need.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# As root on Debian it installs the system packages the engine tests use (docker.io,
# busybox-static, nats-server, clang + wasi-libc for the C-to-WASM example, and
# chromium + chromium-driver for the dashboard tests), makes
# .venv with the project and its test extras, starts a private Docker engine (vfs
# storage, a private socket, no bridge, no iptables) with a busybox image, runs the gates
# (ruff check, ruff format --check, mypy --strict on bacalhau/ and tests/; any finding
# fails the run), runs pytest, and stops the engine it started. Where a service cannot be had, the tests that need it
# skip with the reason; on CI (CI=true) as root they are required and fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    need=()
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need+=(busybox-static)
    command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
    command -v clang >/dev/null 2>&1 || need+=(clang lld wasi-libc)
    [ -d /usr/share/wasi-sysroot ] || [ -d /usr/include/wasm32-wasi ] || need+=(wasi-libc)
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
    if [ "${#need[@]}" -gt 0 ]; then
        log "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || log "apt-get update failed; trying the install anyway"
        apt-get install -y -qq "${need[@]}" >&2 || log "could not install ${need[*]}"
    fi
    if command -v clang >/dev/null 2>&1; then
        major=$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
        if ! ls /usr/lib/llvm-"$major"/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a \
                >/dev/null 2>&1; then
            apt-get install -y -qq "libclang-rt-$major-dev-wasm32" >&2 \
                || log "could not install libclang-rt-$major-dev-wasm32"
        fi
    fi
fi

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' >&2

# The gates before any test: lint, formatting and strict typing of the package and its
# tests. Every finding fails the run (all three run, so one run shows every finding).
gates=0
lint_paths=(bacalhau tests benchmarks examples docs)
log "gate: ruff check"
.venv/bin/ruff check --no-cache "${lint_paths[@]}" >&2 || gates=1
log "gate: ruff format --check"
.venv/bin/ruff format --check --no-cache "${lint_paths[@]}" >&2 || gates=1
log "gate: mypy --strict (bacalhau/ and tests/, configured in pyproject.toml)"
.venv/bin/mypy >&2 || gates=1
if [ "$gates" != 0 ]; then
    log "a gate failed (see above): not running the tests"
    exit 1
fi

# Bacalhau's official Python client pins versions that clash with ours (cryptography<43,
# ruff<0.6, pygments==2.17.2): it gets a venv of its own for tests/test_bacalhau_sdk.py.
sdk_venv=${BACALHAU_SDK_VENV:-.venv-bacalhau-sdk}
if [ ! -f "$sdk_venv/bacalhau-sdk-pins.txt" ]; then
    log "creating $sdk_venv (bacalhau-sdk 1.4.2, bacalhau-apiclient 1.4.1)"
    .venv/bin/python -c 'import sys; sys.path.insert(0, "tests"); import bacalhau_sdk_env as e; p = e.provision(e.sdk_venv()); print(p or "", file=sys.stderr)' \
        || log "could not create $sdk_venv: the Bacalhau client tests will skip (fail on CI)"
fi

if [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ]; then
    # On CI the machine can provide every engine: a missing one is a failure, not a skip.
    export BACALHAU_REQUIRE_DOCKER=1 BACALHAU_REQUIRE_NATS=1
    export BACALHAU_REQUIRE_BROWSER=1  # the dashboard tests' headless Chromium
fi

if exports=$(scripts/nats-server.sh ensure); then
    eval "$exports"
else
    log "no nats-server could be found or installed: NATS tests will skip with the reason"
fi

engine_state=$(mktemp -d /tmp/bacalhau-docker.XXXXXX)
# Each run gets temporary folders of its own: pytest's shared /tmp/pytest-of-USER is
# pruned by every later run, which would pull folders from under a run still going.
test_tmp=$(mktemp -d /tmp/bacalhau-pytest.XXXXXX)
stop_engine() {
    scripts/docker-engine.sh stop "$engine_state" >&2 || true
    rm -rf "$test_tmp"
}
trap stop_engine EXIT
if exports=$(scripts/docker-engine.sh start "$engine_state"); then
    eval "$exports"
    log "docker engine at $DOCKER_HOST"
else
    log "no Docker engine could be provisioned: docker tests will skip with the reason"
fi

set +e
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --durations=30 --basetemp="$test_tmp/t" "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    log "pytest collected no tests"
fi
exit "$status"
