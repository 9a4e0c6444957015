# Native parts of ferry, built by node-gyp at `npm ci` (npm runs `node-gyp rebuild` when this file
# is at the package root). Output: build/Release/<target>.
{
  'targets': [
    {
      # N-API addon with the filesystem syscalls Node lacks (mknod, l*xattr, utimensat nofollow,
      # syncfs), loaded by src/io/native.ts.
      # It decodes zstd on a thread of its own (native/zstd-thread.c), with zstd's decompressor
      # compiled from zstd-napi's copy of the sources: the version ferry's other zstd code uses.
      'target_name': 'ferry_native',
      'sources': [
        'native/ferry_native.c',
        'native/zstd-thread.c',
        'node_modules/zstd-napi/deps/zstd/lib/common/entropy_common.c',
        'node_modules/zstd-napi/deps/zstd/lib/common/error_private.c',
        'node_modules/zstd-napi/deps/zstd/lib/common/fse_decompress.c',
        'node_modules/zstd-napi/deps/zstd/lib/common/xxhash.c',
        'node_modules/zstd-napi/deps/zstd/lib/common/zstd_common.c',
        'node_modules/zstd-napi/deps/zstd/lib/decompress/huf_decompress.c',
        'node_modules/zstd-napi/deps/zstd/lib/decompress/huf_decompress_amd64.S',
        'node_modules/zstd-napi/deps/zstd/lib/decompress/zstd_ddict.c',
        'node_modules/zstd-napi/deps/zstd/lib/decompress/zstd_decompress.c',
        'node_modules/zstd-napi/deps/zstd/lib/decompress/zstd_decompress_block.c',
      ],
      'include_dirs': ['node_modules/zstd-napi/deps/zstd/lib'],
      'defines': ['NAPI_VERSION=8', 'XXH_NAMESPACE=ZSTD_', 'ZSTD_NO_TRACE', 'ZSTDLIB_VISIBLE=', 'ZSTDERRORLIB_VISIBLE='],
      'cflags': ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fvisibility=hidden'],
      'ldflags': ['-Wl,-z,noexecstack', '-Wl,-z,relro', '-Wl,-z,now'],
    },
    {
      # The container launcher (src/runtime/launcher.ts spawns it): namespaces, pivot_root and
      # exec cannot be done from inside the multi-threaded node process. Linked dynamically (a
      # static glibc is not installed everywhere); it loads nothing once inside a container's
      # root: no NSS lookups, no dlopen, libraries are mapped at exec on the host.
      'target_name': 'ferry-launch',
      'type': 'executable',
      'sources': ['native/ferry-launch.c'],
      'cflags': ['-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-O2'],
      'ldflags': ['-Wl,-z,noexecstack', '-Wl,-z,relro', '-Wl,-z,now'],
    },
  ],
}
