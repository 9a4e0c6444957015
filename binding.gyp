# Native parts of ferry, built by node-gyp at `npm ci` (npm runs `node-gyp rebuild` when this file
# is at the package root). Output: build/Release/<target>.
{
  'targets': [
    {
      # N-API addon with the filesystem syscalls Node lacks (mknod, l*xattr, utimensat nofollow,
      # syncfs), loaded by src/io/native.ts.
      'target_name': 'ferry_native',
      'sources': ['native/ferry_native.c'],
      'defines': ['NAPI_VERSION=8'],
      'cflags': ['-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fvisibility=hidden'],
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
