/*
 * The "bacalhau" WebAssembly import module: read an input volume's bytes
 * without the volume being a file. Works for every single-file input volume
 * (the only way to reach a volume the node streams in library mode).
 *
 * Errors are negated WASI errno values: -44 (ENOENT) no volume at that path,
 * -31 (EISDIR) the volume is a directory, -8 (EBADF) bad handle, -21 (EFAULT)
 * buffer outside memory, -28 (EINVAL) negative offset, -29 (EIO) the node could
 * not read the data (the execution then fails on the node's side).
 */
#ifndef BACALHAU_H
#define BACALHAU_H

#include <stddef.h>
#include <stdint.h>

#define BACALHAU_IMPORT(name) __attribute__((import_module("bacalhau"), import_name(name)))

/* Handle (>= 0) of the input volume whose target is `path`, or -errno. */
BACALHAU_IMPORT("volume_open")
int32_t bacalhau_volume_open(const char *path, size_t path_len);

/* Size in bytes of the volume, or -errno. */
BACALHAU_IMPORT("volume_size")
int64_t bacalhau_volume_size(int32_t handle);

/* Copy up to `len` bytes from `offset` into `buf`; bytes copied (0 at the end), or -errno. */
BACALHAU_IMPORT("volume_read")
int32_t bacalhau_volume_read(int32_t handle, int64_t offset, void *buf, size_t len);

#endif
