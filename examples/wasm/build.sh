#!/bin/sh
# Build the example C programs to WebAssembly (wasm32-wasi) with clang.
#
#   examples/wasm/build.sh [OUT_DIR]      (default: examples/wasm/build)
#
# Needs clang, lld, wasi-libc and clang's wasm32 runtime library. When they are
# missing and this runs as root on a Debian/Ubuntu machine, it installs them
# with apt-get (clang lld wasi-libc libclang-rt-<clang major>-dev-wasm32).
# Prints the path of each module it builds. Exit 0 on success.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/build"}
CLANG=${CLANG:-clang}
SYSROOT=${WASI_SYSROOT:-/usr}

can_build() {
    command -v "$CLANG" >/dev/null 2>&1 || return 1
    probe=$(mktemp -d)
    printf '#include <stdio.h>\nint main(void){puts("ok");return 0;}\n' > "$probe/p.c"
    if "$CLANG" --target=wasm32-wasi --sysroot="$SYSROOT" -O2 -o "$probe/p.wasm" "$probe/p.c" \
        >"$probe/log" 2>&1; then
        rm -rf "$probe"; return 0
    fi
    cat "$probe/log" >&2; rm -rf "$probe"; return 1
}

install_toolchain() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "build.sh: clang cannot build for wasm32-wasi here; install clang, lld, wasi-libc" \
             "and libclang-rt-<version>-dev-wasm32 (Debian names), or set CLANG/WASI_SYSROOT" >&2
        exit 1
    fi
    echo "build.sh: installing the wasm32-wasi toolchain with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq clang lld wasi-libc >&2
    major=$("$CLANG" --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
    if apt-cache show "libclang-rt-$major-dev-wasm32" >/dev/null 2>&1; then
        apt-get install -y -qq "libclang-rt-$major-dev-wasm32" >&2
    fi
}

can_build || { install_toolchain; can_build; }

mkdir -p "$out"
for src in "$here"/*.c; do
    name=$(basename "$src" .c)
    "$CLANG" --target=wasm32-wasi --sysroot="$SYSROOT" -O2 -I"$here" -Wl,--strip-all \
        -o "$out/$name.wasm" "$src"
    echo "$out/$name.wasm"
done
