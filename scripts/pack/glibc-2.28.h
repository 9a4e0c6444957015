/*
 * Force-included (gcc -include) when `npm run pack` builds the native addons against the build
 * host's newer glibc, so that they need at most GLIBC_2.28 (RHEL 8, Debian 10), like the official
 * Node binary they are loaded into. scripts/pack/pack.js checks every ELF afterwards and refuses a
 * pack that still needs more: when it names a new symbol, add it here.
 *
 * glibc 2.33 made stat/fstat/lstat/fstatat/mknod real symbols (older ones export only the
 * __xstat family), so those go straight to the kernel. glibc 2.34 moved libpthread into libc with
 * new symbol versions; the old versions are still exported, so those are bound by .symver.
 */
#ifndef FERRY_GLIBC_228_H
#define FERRY_GLIBC_228_H
/* Assembler sources (zstd's huf_decompress_amd64.S) get the same flags. */
#ifndef __ASSEMBLER__

/*
 * The stat family only where asked (-DFERRY_COMPAT_STAT: ferry's own addon): with
 * _FILE_OFFSET_BITS=64, as node-gyp builds zstd, glibc maps `stat` to `stat64` by an object-like
 * macro these function-like ones would fight with, and zstd's library calls none of them.
 */
#ifdef FERRY_COMPAT_STAT
/* The sources define _GNU_SOURCE (empty) before their includes; these come first, so do the same. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x86_64 and aarch64 glibc's struct stat is the kernel's, so the raw syscalls fill it as is. */
static inline int ferry_compat_fstatat(int dir, const char *path, struct stat *st, int flags) {
  return (int)syscall(SYS_newfstatat, dir, path, st, flags);
}
static inline int ferry_compat_stat(const char *path, struct stat *st) {
  return ferry_compat_fstatat(AT_FDCWD, path, st, 0);
}
static inline int ferry_compat_lstat(const char *path, struct stat *st) {
  return ferry_compat_fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}
static inline int ferry_compat_fstat(int fd, struct stat *st) {
  return ferry_compat_fstatat(fd, "", st, AT_EMPTY_PATH);
}
static inline int ferry_compat_mknodat(int dir, const char *path, mode_t mode, dev_t dev) {
  return (int)syscall(SYS_mknodat, dir, path, mode, dev);
}
static inline int ferry_compat_mknod(const char *path, mode_t mode, dev_t dev) {
  return ferry_compat_mknodat(AT_FDCWD, path, mode, dev);
}

#ifdef __cplusplus
}
#endif

/* Function-like macros: `struct stat` (the type) keeps its name. */
#define fstatat(d, p, s, f) ferry_compat_fstatat((d), (p), (s), (f))
#define stat(p, s) ferry_compat_stat((p), (s))
#define lstat(p, s) ferry_compat_lstat((p), (s))
#define fstat(fd, s) ferry_compat_fstat((fd), (s))
#define mknodat(d, p, m, v) ferry_compat_mknodat((d), (p), (m), (v))
#define mknod(p, m, v) ferry_compat_mknod((p), (m), (v))
#endif /* FERRY_COMPAT_STAT */

#if defined(__x86_64__)
#define FERRY_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define FERRY_GLIBC_BASE "GLIBC_2.17"
#endif

#ifdef FERRY_GLIBC_BASE
__asm__(".symver pthread_create,pthread_create@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_join,pthread_join@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_detach,pthread_detach@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_attr_setstacksize,pthread_attr_setstacksize@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_key_create,pthread_key_create@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_key_delete,pthread_key_delete@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_getspecific,pthread_getspecific@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_setspecific,pthread_setspecific@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_once,pthread_once@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_mutexattr_init,pthread_mutexattr_init@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_mutexattr_settype,pthread_mutexattr_settype@" FERRY_GLIBC_BASE);
__asm__(".symver pthread_mutexattr_destroy,pthread_mutexattr_destroy@" FERRY_GLIBC_BASE);
__asm__(".symver dlopen,dlopen@" FERRY_GLIBC_BASE);
__asm__(".symver dlsym,dlsym@" FERRY_GLIBC_BASE);
__asm__(".symver dlclose,dlclose@" FERRY_GLIBC_BASE);
__asm__(".symver dlerror,dlerror@" FERRY_GLIBC_BASE);
#endif

#endif /* __ASSEMBLER__ */
#endif
