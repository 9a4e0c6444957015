/*
 * ferry_native: the few filesystem syscalls Node has no binding for, needed to unpack image
 * layers in overlay form (0:0 whiteout char devices, trusted.overlay.* xattrs, device nodes,
 * FIFOs, symlink times). Plain C against node_api.h so it adds no dependency.
 *
 * Every filesystem function is synchronous: each is one short syscall on a local path, cheaper
 * than a thread-pool hop. Two more start and reap the container launcher (spawnSession, waitExit:
 * posix_spawn instead of libuv's fork; see there); waitExit alone runs on the thread pool. sha256
 * hashes bytes in memory with the OpenSSL of the Node that loads this addon. None follows a symlink in the last path component (l* variants,
 * AT_SYMLINK_NOFOLLOW); mknod never follows one either (it fails with EEXIST).
 *
 * The *At functions work relative to a directory fd and take one name component (no '/', not
 * "." or ".."), so a tree that a running container changes under us (`commit`, `diff`, user
 * lookup) is walked without ever following a symlink or landing outside it: a directory is
 * entered only through openat(O_DIRECTORY|O_NOFOLLOW), and a file's bytes are read only from an
 * fd that fstat shows is a regular file. Device nodes and FIFOs are never opened.
 *
 * Errors are thrown as Error objects whose `code` is the errno name (ENOENT, EPERM, ...), like
 * Node's own fs errors, with `errno` and `syscall` set too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/openat2.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <node_api.h>

#include "napi-args.h"
#include "zstd-thread.h"

#define XATTR_VALUE_MAX 65536 /* Linux XATTR_SIZE_MAX */
#define XATTR_LIST_MAX_BYTES 65536 /* Linux XATTR_LIST_MAX */

static const char *errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case ENODATA: return "ENODATA";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EDQUOT: return "EDQUOT";
    case ESRCH: return "ESRCH";
    case ETXTBSY: return "ETXTBSY";
    default: return "EUNKNOWN";
  }
}

/* Throw Error("<syscall> <path>: <strerror>") with code/errno/syscall/path set ("" path: fd calls). */
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char message[PATH_MAX + 256];
  if (path[0] == 0) snprintf(message, sizeof message, "%s: %s", syscall, strerror(err));
  else snprintf(message, sizeof message, "%s %s: %s", syscall, path, strerror(err));
  napi_value msg, code, error, errno_value, syscall_value, path_value;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_set_named_property(env, error, "code", code);
  napi_create_int32(env, -err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error, "syscall", syscall_value);
  napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &path_value);
  napi_set_named_property(env, error, "path", path_value);
  napi_throw(env, error);
  return NULL;
}

/*
 * A path argument: a string (UTF-8) or a Buffer holding raw bytes, so names that are not
 * valid UTF-8 (tar entries may be anything but NUL and '/') reach the kernel unchanged.
 * Returns 0 on success; on failure a TypeError is pending.
 */
static int get_path(napi_env env, napi_value value, char *out, size_t out_size) {
  bool is_buffer = false;
  napi_is_buffer(env, value, &is_buffer);
  if (is_buffer) {
    void *data;
    size_t length;
    napi_get_buffer_info(env, value, &data, &length);
    if (length == 0 || length >= out_size || memchr(data, 0, length) != NULL) {
      throw_type(env, "path must be 1..PATH_MAX-1 bytes without NUL");
      return -1;
    }
    memcpy(out, data, length);
    out[length] = 0;
    return 0;
  }
  size_t length;
  if (napi_get_value_string_utf8(env, value, out, out_size, &length) != napi_ok) {
    throw_type(env, "path must be a string or a Buffer");
    return -1;
  }
  if (length == 0 || length >= out_size - 1 || strlen(out) != length) {
    throw_type(env, "path must be 1..PATH_MAX-1 bytes without NUL");
    return -1;
  }
  return 0;
}

static int get_name(napi_env env, napi_value value, char *out, size_t out_size) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, out, out_size, &length) != napi_ok) {
    throw_type(env, "xattr name must be a string");
    return -1;
  }
  if (length == 0 || length >= out_size - 1 || strlen(out) != length) {
    throw_type(env, "xattr name must be 1..255 bytes without NUL");
    return -1;
  }
  return 0;
}

/* A non-negative integer argument that fits in uint32 (modes, device numbers). */
static int get_u32(napi_env env, napi_value value, const char *what, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d) {
    char message[96];
    snprintf(message, sizeof message, "%s must be an integer in 0..2^32-1", what);
    throw_type(env, message);
    return -1;
  }
  *out = (uint32_t)d;
  return 0;
}

static int get_i64(napi_env env, napi_value value, const char *what, int64_t *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || d != (double)(int64_t)d) {
    char message[96];
    snprintf(message, sizeof message, "%s must be an integer", what);
    throw_type(env, message);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

/* mknod(path, mode, major, minor): mode carries the type (S_IFCHR, S_IFBLK, S_IFIFO). */
static napi_value Mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[PATH_MAX];
  uint32_t mode, major_number, minor_number;
  if (get_args(env, info, 4, argv) || get_path(env, argv[0], path, sizeof path) ||
      get_u32(env, argv[1], "mode", &mode) || get_u32(env, argv[2], "major", &major_number) ||
      get_u32(env, argv[3], "minor", &minor_number)) {
    return NULL;
  }
  mode_t type = mode & S_IFMT;
  if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO) {
    return throw_type(env, "mknod mode must be S_IFCHR, S_IFBLK or S_IFIFO");
  }
  if (mknod(path, (mode_t)mode, makedev(major_number, minor_number)) != 0) {
    return throw_errno(env, errno, "mknod", path);
  }
  return NULL;
}

/* lsetxattr(path, name, value: Buffer): on the link itself, never its target. */
static napi_value Lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[PATH_MAX];
  char name[XATTR_NAME_MAX + 1];
  if (get_args(env, info, 3, argv) || get_path(env, argv[0], path, sizeof path) ||
      get_name(env, argv[1], name, sizeof name)) {
    return NULL;
  }
  bool is_buffer = false;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (!is_buffer) return throw_type(env, "xattr value must be a Buffer");
  void *data;
  size_t length;
  napi_get_buffer_info(env, argv[2], &data, &length);
  if (lsetxattr(path, name, data, length, 0) != 0) {
    return throw_errno(env, errno, "lsetxattr", path);
  }
  return NULL;
}

/* The value a *getxattr call wrote into `value` (freed here) as a Buffer; null when the attribute is absent. */
static napi_value xattr_value(napi_env env, char *value, ssize_t length, const char *syscall, const char *what) {
  napi_value result;
  if (length < 0) {
    int err = errno;
    free(value);
    if (err != ENODATA) return throw_errno(env, err, syscall, what);
    napi_get_null(env, &result);
    return result;
  }
  napi_create_buffer_copy(env, (size_t)length, value, NULL, &result);
  free(value);
  return result;
}

/* lgetxattr(path, name) -> Buffer, or null when the attribute is absent. */
static napi_value Lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_MAX];
  char name[XATTR_NAME_MAX + 1];
  if (get_args(env, info, 2, argv) || get_path(env, argv[0], path, sizeof path) ||
      get_name(env, argv[1], name, sizeof name)) {
    return NULL;
  }
  char *value = malloc(XATTR_VALUE_MAX);
  if (value == NULL) return throw_errno(env, ENOMEM, "lgetxattr", path);
  return xattr_value(env, value, lgetxattr(path, name, value, XATTR_VALUE_MAX), "lgetxattr", path);
}

/* The NUL-separated names a *listxattr call wrote into `list` (freed here), as a string array. */
static napi_value xattr_names(napi_env env, char *list, ssize_t length, const char *syscall, const char *what) {
  if (length < 0) {
    int err = errno;
    free(list);
    return throw_errno(env, err, syscall, what);
  }
  napi_value result;
  napi_create_array(env, &result);
  uint32_t index = 0;
  for (ssize_t offset = 0; offset < length;) {
    size_t name_length = strnlen(list + offset, (size_t)(length - offset));
    if (name_length > 0) {
      napi_value name;
      napi_create_string_utf8(env, list + offset, name_length, &name);
      napi_set_element(env, result, index++, name);
    }
    offset += (ssize_t)name_length + 1;
  }
  free(list);
  return result;
}

/* llistxattr(path) -> string[] of attribute names (those the caller may see). */
static napi_value Llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX];
  if (get_args(env, info, 1, argv) || get_path(env, argv[0], path, sizeof path)) return NULL;
  char *list = malloc(XATTR_LIST_MAX_BYTES);
  if (list == NULL) return throw_errno(env, ENOMEM, "llistxattr", path);
  return xattr_names(env, list, llistxattr(path, list, XATTR_LIST_MAX_BYTES), "llistxattr", path);
}

/* lutimes(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): utimensat without following a symlink. */
static napi_value Lutimes(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[PATH_MAX];
  int64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec;
  if (get_args(env, info, 5, argv) || get_path(env, argv[0], path, sizeof path) ||
      get_i64(env, argv[1], "atimeSec", &atime_sec) || get_i64(env, argv[2], "atimeNsec", &atime_nsec) ||
      get_i64(env, argv[3], "mtimeSec", &mtime_sec) || get_i64(env, argv[4], "mtimeNsec", &mtime_nsec)) {
    return NULL;
  }
  if (atime_nsec < 0 || atime_nsec > 999999999 || mtime_nsec < 0 || mtime_nsec > 999999999) {
    return throw_type(env, "nanoseconds must be in 0..999999999");
  }
  struct timespec times[2];
  times[0].tv_sec = (time_t)atime_sec;
  times[0].tv_nsec = (long)atime_nsec;
  times[1].tv_sec = (time_t)mtime_sec;
  times[1].tv_nsec = (long)mtime_nsec;
  if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0) {
    return throw_errno(env, errno, "utimensat", path);
  }
  return NULL;
}

/*
 * syncfs(path): flush the whole filesystem holding path. One call after unpacking a layer
 * replaces an fsync per file (containerd does the same before committing a snapshot).
 */
static napi_value Syncfs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX];
  if (get_args(env, info, 1, argv) || get_path(env, argv[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  if (syncfs(fd) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "syncfs", path);
  }
  close(fd);
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Walking a tree from directory fds (see the header comment). */

static int get_fd(napi_env env, napi_value value, int *out) {
  int32_t fd;
  if (napi_get_value_int32(env, value, &fd) != napi_ok || (fd < 0 && fd != AT_FDCWD)) {
    throw_type(env, "fd must be a non-negative integer");
    return -1;
  }
  *out = fd;
  return 0;
}

/* One name in a directory: what readdir gives, never a path that could walk through a link. */
static int get_component(napi_env env, napi_value value, char *out, size_t out_size) {
  if (get_path(env, value, out, out_size)) return -1;
  if (strchr(out, '/') != NULL || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) {
    throw_type(env, "name must be one path component (no '/', not . or ..)");
    return -1;
  }
  return 0;
}

static napi_value make_int(napi_env env, int value) {
  napi_value result;
  napi_create_int32(env, value, &result);
  return result;
}

static napi_value make_null(napi_env env) {
  napi_value result;
  napi_get_null(env, &result);
  return result;
}

static void set_number(napi_env env, napi_value object, const char *name, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

static void set_bigint(napi_env env, napi_value object, const char *name, uint64_t value) {
  napi_value v;
  napi_create_bigint_uint64(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

/* struct stat as { mode, uid, gid, nlink, size, dev, ino, rdev, rdevMajor, rdevMinor, mtimeSec, mtimeNsec }. */
static napi_value stat_object(napi_env env, const struct stat *st) {
  napi_value o;
  napi_create_object(env, &o);
  set_number(env, o, "mode", st->st_mode);
  set_number(env, o, "uid", st->st_uid);
  set_number(env, o, "gid", st->st_gid);
  set_number(env, o, "nlink", (double)st->st_nlink);
  set_number(env, o, "size", (double)st->st_size);
  set_bigint(env, o, "dev", (uint64_t)st->st_dev);
  set_bigint(env, o, "ino", (uint64_t)st->st_ino);
  set_bigint(env, o, "rdev", (uint64_t)st->st_rdev);
  set_number(env, o, "rdevMajor", major(st->st_rdev));
  set_number(env, o, "rdevMinor", minor(st->st_rdev));
  set_number(env, o, "mtimeSec", (double)st->st_mtim.tv_sec);
  set_number(env, o, "mtimeNsec", (double)st->st_mtim.tv_nsec);
  return o;
}

/* openDir(path) -> fd: the root of a walk, a directory ferry itself names (followed, O_RDONLY). */
static napi_value OpenDir(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX];
  if (get_args(env, info, 1, argv) || get_path(env, argv[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  return make_int(env, fd);
}

/* openDirAt(dirFd, name) -> fd: the directory `name`, or ELOOP/ENOTDIR when it is anything else. */
static napi_value OpenDirAt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[PATH_MAX];
  int dir;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &dir) || get_component(env, argv[1], name, sizeof name)) return NULL;
  int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return throw_errno(env, errno, "openat", name);
  return make_int(env, fd);
}

/* openPathAt(dirFd, name) -> an O_PATH fd of `name` itself (a link stays a link): opens no device. */
static napi_value OpenPathAt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[PATH_MAX];
  int dir;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &dir) || get_component(env, argv[1], name, sizeof name)) return NULL;
  int fd = openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "openat", name);
  return make_int(env, fd);
}

/*
 * openat2(dirFd, path, resolve) -> an O_PATH fd, resolved with openat2's RESOLVE_* flags (e.g.
 * RESOLVE_IN_ROOT: "/" and ".." stop at dirFd). ENOSYS on kernels before 5.6.
 */
static napi_value Openat2(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[PATH_MAX];
  int dir;
  uint32_t resolve;
  if (get_args(env, info, 3, argv) || get_fd(env, argv[0], &dir) || get_path(env, argv[1], path, sizeof path) ||
      get_u32(env, argv[2], "resolve", &resolve)) {
    return NULL;
  }
#ifdef SYS_openat2
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = resolve;
  long fd = syscall(SYS_openat2, dir, path, &how, sizeof how);
  if (fd < 0) return throw_errno(env, errno, "openat2", path);
  return make_int(env, (int)fd);
#else
  return throw_errno(env, ENOSYS, "openat2", path);
#endif
}

/*
 * reopenRegular(pathFd) -> an O_RDONLY|O_NONBLOCK|O_NOCTTY fd of the same inode, or null when it
 * is not a regular file. Through /proc/self/fd, so the inode cannot change between the check and
 * the open, and a device node or FIFO is never opened (opening a device runs its driver).
 * O_NONBLOCK: a lease or a FIFO cannot make the open wait.
 */
static napi_value ReopenRegular(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int pfd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &pfd)) return NULL;
  struct stat before, after;
  if (fstat(pfd, &before) != 0) return throw_errno(env, errno, "fstat", "");
  if (!S_ISREG(before.st_mode)) return make_null(env);
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", pfd);
  int fd = open(proc, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", proc);
  if (fstat(fd, &after) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "fstat", "");
  }
  if (!S_ISREG(after.st_mode) || after.st_dev != before.st_dev || after.st_ino != before.st_ino) {
    close(fd);
    return make_null(env);
  }
  return make_int(env, fd);
}

/* fstat(fd) -> stat object. */
static napi_value Fstat(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) return throw_errno(env, errno, "fstat", "");
  return stat_object(env, &st);
}

/* fstatat(dirFd, name) -> stat object of `name` itself (AT_SYMLINK_NOFOLLOW). */
static napi_value Fstatat(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[PATH_MAX];
  int dir;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &dir) || get_component(env, argv[1], name, sizeof name)) return NULL;
  struct stat st;
  if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return throw_errno(env, errno, "fstatat", name);
  return stat_object(env, &st);
}

/* readlinkat(dirFd, name) -> Buffer (EINVAL when `name` is not a symlink). */
static napi_value Readlinkat(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[PATH_MAX];
  int dir;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &dir) || get_component(env, argv[1], name, sizeof name)) return NULL;
  char target[PATH_MAX + 1];
  ssize_t n = readlinkat(dir, name, target, sizeof target);
  if (n < 0) return throw_errno(env, errno, "readlinkat", name);
  if ((size_t)n >= sizeof target) return throw_errno(env, ENAMETOOLONG, "readlinkat", name);
  napi_value result;
  napi_create_buffer_copy(env, (size_t)n, target, NULL, &result);
  return result;
}

/* readDirFd(dirFd) -> Buffer[]: the names in the directory (not . and ..), in readdir order. */
static napi_value ReadDirFd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int dir;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &dir)) return NULL;
  /* fdopendir takes the fd over: give it a copy (the caller keeps and closes its own). */
  int copy = fcntl(dir, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return throw_errno(env, errno, "dup", "");
  DIR *d = fdopendir(copy);
  if (d == NULL) {
    int err = errno;
    close(copy);
    return throw_errno(env, err, "fdopendir", "");
  }
  rewinddir(d); /* the copy shares the offset with the caller's fd */
  napi_value result;
  napi_create_array(env, &result);
  uint32_t index = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (e == NULL) break;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    napi_value name;
    napi_create_buffer_copy(env, strlen(e->d_name), e->d_name, NULL, &name);
    napi_set_element(env, result, index++, name);
  }
  int err = errno;
  closedir(d);
  if (err != 0) return throw_errno(env, err, "readdir", "");
  return result;
}

/* fgetxattr(fd, name) -> Buffer, or null when absent. */
static napi_value Fgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[XATTR_NAME_MAX + 1];
  int fd;
  if (get_args(env, info, 2, argv) || get_fd(env, argv[0], &fd) || get_name(env, argv[1], name, sizeof name)) return NULL;
  char *value = malloc(XATTR_VALUE_MAX);
  if (value == NULL) return throw_errno(env, ENOMEM, "fgetxattr", "");
  return xattr_value(env, value, fgetxattr(fd, name, value, XATTR_VALUE_MAX), "fgetxattr", "");
}

/* flistxattr(fd) -> string[]. */
static napi_value Flistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  char *list = malloc(XATTR_LIST_MAX_BYTES);
  if (list == NULL) return throw_errno(env, ENOMEM, "flistxattr", "");
  return xattr_names(env, list, flistxattr(fd, list, XATTR_LIST_MAX_BYTES), "flistxattr", "");
}

/*
 * The xattrs of `name` in a directory fd, for entries that are never opened (symlinks, devices,
 * FIFOs): l*xattr on /proc/self/fd/DIR/NAME: the directory is the fd's, NAME is not followed.
 */
static int at_path(napi_env env, napi_callback_info info, size_t want, napi_value *argv, char *out, size_t out_size, char *name) {
  int dir;
  if (get_args(env, info, want, argv) || get_fd(env, argv[0], &dir) || get_component(env, argv[1], name, PATH_MAX)) return -1;
  if (dir == AT_FDCWD) {
    throw_type(env, "a directory fd is needed");
    return -1;
  }
  if ((size_t)snprintf(out, out_size, "/proc/self/fd/%d/%s", dir, name) >= out_size) {
    throw_errno(env, ENAMETOOLONG, "xattr", name);
    return -1;
  }
  return 0;
}

/* lgetxattrAt(dirFd, name, attr) -> Buffer, or null when absent. */
static napi_value LgetxattrAt(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[PATH_MAX], path[PATH_MAX + 64], attr[XATTR_NAME_MAX + 1];
  if (at_path(env, info, 3, argv, path, sizeof path, name) || get_name(env, argv[2], attr, sizeof attr)) return NULL;
  char *value = malloc(XATTR_VALUE_MAX);
  if (value == NULL) return throw_errno(env, ENOMEM, "lgetxattr", name);
  return xattr_value(env, value, lgetxattr(path, attr, value, XATTR_VALUE_MAX), "lgetxattr", name);
}

/* llistxattrAt(dirFd, name) -> string[]. */
static napi_value LlistxattrAt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[PATH_MAX], path[PATH_MAX + 64];
  if (at_path(env, info, 2, argv, path, sizeof path, name)) return NULL;
  char *list = malloc(XATTR_LIST_MAX_BYTES);
  if (list == NULL) return throw_errno(env, ENOMEM, "llistxattr", name);
  return xattr_names(env, list, llistxattr(path, list, XATTR_LIST_MAX_BYTES), "llistxattr", name);
}

/* close(fd). */
static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, argv) || get_fd(env, argv[0], &fd)) return NULL;
  if (fd == AT_FDCWD) return throw_type(env, "fd must be a non-negative integer");
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, errno, "close", "");
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Starting the container launcher. */

#define SPAWN_MAX_ARGS 16
#define SPAWN_ARG_MAX 4096

/*
 * spawnSession(path, args, [stdin, stdout, stderr]) -> [pid, fd]: start `path` (argv[0] = path)
 * in a new session with fds 0-2 as given, fd 3 one end of a new Unix socket pair (the other end,
 * close-on-exec, is returned), every signal at its default and none blocked, an empty
 * environment. Every other fd of this process is close-on-exec (Node opens all so).
 *
 * Why not Node's spawn: libuv forks, copying the page tables of the whole Node process before the
 * exec (8-18 ms for a 50-150 MB process, measured), on every container start. glibc's posix_spawn
 * runs the child on the caller's memory (CLONE_VM|CLONE_VFORK) until its exec, and reports a
 * failed exec as its error. The caller reaps the child with waitExit.
 */
static napi_value SpawnSession(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[PATH_MAX];
  if (get_args(env, info, 4, argv) || get_path(env, argv[0], path, sizeof path)) return NULL;
  bool is_buffer = false;
  napi_is_buffer(env, argv[3], &is_buffer);
  if (!is_buffer) return throw_type(env, "input must be a Buffer");
  void *input;
  size_t input_length;
  napi_get_buffer_info(env, argv[3], &input, &input_length);
  bool is_array = false;
  uint32_t nargs = 0, nstdio = 0;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array || napi_get_array_length(env, argv[1], &nargs) != napi_ok || nargs > SPAWN_MAX_ARGS) {
    return throw_type(env, "args must be an array of at most 16 strings");
  }
  napi_is_array(env, argv[2], &is_array);
  if (!is_array || napi_get_array_length(env, argv[2], &nstdio) != napi_ok || nstdio != 3) {
    return throw_type(env, "stdio must be an array of 3 fds");
  }
  char storage[SPAWN_MAX_ARGS][SPAWN_ARG_MAX];
  char *child_argv[SPAWN_MAX_ARGS + 2];
  child_argv[0] = path;
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value item;
    size_t length = 0;
    napi_get_element(env, argv[1], i, &item);
    if (napi_get_value_string_utf8(env, item, storage[i], SPAWN_ARG_MAX, &length) != napi_ok || length >= SPAWN_ARG_MAX - 1) {
      return throw_type(env, "each arg must be a string shorter than 4095 bytes");
    }
    child_argv[i + 1] = storage[i];
  }
  child_argv[nargs + 1] = NULL;
  int stdio[3];
  for (uint32_t i = 0; i < 3; i++) {
    napi_value item;
    napi_get_element(env, argv[2], i, &item);
    if (get_fd(env, item, &stdio[i])) return NULL;
    if (stdio[i] == AT_FDCWD) return throw_type(env, "stdio fds must be non-negative");
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return throw_errno(env, errno, "socketpair", "");
  /* The child's end goes to fd 3 by dup2, which clears close-on-exec only when it moves the fd. */
  if (pair[1] <= 3) {
    int moved = fcntl(pair[1], F_DUPFD_CLOEXEC, 10);
    int err = errno;
    close(pair[1]);
    if (moved < 0) {
      close(pair[0]);
      return throw_errno(env, err, "fcntl", "");
    }
    pair[1] = moved;
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  for (int i = 0; i < 3; i++) posix_spawn_file_actions_adddup2(&actions, stdio[i], i);
  posix_spawn_file_actions_adddup2(&actions, pair[1], 3);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  char *no_env[] = {NULL};
  pid_t pid;
  int err = posix_spawn(&pid, path, &actions, &attr, child_argv, no_env);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(pair[1]);
  if (err != 0) {
    close(pair[0]);
    return throw_errno(env, err, "posix_spawn", path);
  }
  /*
   * The request goes out now, not after Node has set up a reader: the child is reading it already.
   * It fits the socket's buffer, so this does not wait. A child that exits without reading it
   * (EPIPE, ECONNRESET) says why on its status; the caller reads that.
   */
  for (size_t sent = 0; sent < input_length;) {
    ssize_t n = send(pair[0], (const char *)input + sent, input_length - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += (size_t)n;
  }
  shutdown(pair[0], SHUT_WR);
  napi_value result, pid_value, fd_value;
  napi_create_array_with_length(env, 2, &result);
  napi_create_int32(env, pid, &pid_value);
  napi_create_int32(env, pair[0], &fd_value);
  napi_set_element(env, result, 0, pid_value);
  napi_set_element(env, result, 1, fd_value);
  return result;
}

/*
 * OpenSSL's one-shot SHA-256, from the Node binary this addon is loaded into (Node exports its
 * OpenSSL to addons): ferry hashes small blobs it reads (manifests, configs) without loading
 * node:crypto, which costs a `ferry run` more time than the hashing.
 */
extern unsigned char *SHA256(const unsigned char *data, size_t length, unsigned char *md);

/* sha256(bytes: Buffer): the hex digest. */
static napi_value Sha256(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  bool is_buffer = false;
  napi_is_buffer(env, argv[0], &is_buffer);
  if (!is_buffer) return throw_type(env, "sha256 takes a Buffer");
  void *data;
  size_t length;
  napi_get_buffer_info(env, argv[0], &data, &length);
  unsigned char md[32];
  SHA256(data, length, md);
  static const char digits[] = "0123456789abcdef";
  char hex[64];
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  napi_value result;
  napi_create_string_latin1(env, hex, sizeof hex, &result);
  return result;
}

struct wait_work {
  napi_async_work work;
  napi_deferred deferred;
  pid_t pid;
  int status;
  int err;
};

static void wait_execute(napi_env env, void *data) {
  struct wait_work *w = data;
  for (;;) {
    if (waitpid(w->pid, &w->status, 0) == w->pid) return;
    if (errno != EINTR) {
      w->err = errno;
      return;
    }
  }
}

static void wait_complete(napi_env env, napi_status status, void *data) {
  struct wait_work *w = data;
  napi_value result;
  if (w->err != 0) {
    napi_value msg;
    char message[128];
    snprintf(message, sizeof message, "waitpid %d: %s", (int)w->pid, strerror(w->err));
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, w->deferred, result);
  } else {
    /* A shell's convention, as ferry reports a container's exit: the code, or 128+N for signal N. */
    int code = WIFEXITED(w->status) ? WEXITSTATUS(w->status) : WIFSIGNALED(w->status) ? 128 + WTERMSIG(w->status) : 255;
    napi_create_int32(env, code, &result);
    napi_resolve_deferred(env, w->deferred, result);
  }
  napi_delete_async_work(env, w->work);
  free(w);
}

/*
 * waitExit(pid) -> Promise<number>: reap a child started by spawnSession, on a thread-pool thread
 * (a blocking waitpid: the thread is held while the child runs). libuv reaps only the children
 * it spawned itself, each by its pid, so the two never take each other's.
 */
static napi_value WaitExit(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t pid;
  if (get_args(env, info, 1, argv)) return NULL;
  if (napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0) return throw_type(env, "pid must be a positive integer");
  struct wait_work *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, ENOMEM, "waitExit", "");
  w->pid = pid;
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "ferry.waitExit", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, wait_execute, wait_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

/*
 * exitNow(code): _exit(2) at once. For the CLI once its command is done and its output flushed:
 * Node's own exit then still joins V8's platform threads and tears the heap down (~4 ms), work a
 * process about to vanish does not need; the kernel closes the fds and frees the memory anyway.
 */
static napi_value ExitNow(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t code;
  if (get_args(env, info, 1, argv)) return NULL;
  if (napi_get_value_int32(env, argv[0], &code) != napi_ok || code < 0 || code > 255) return throw_type(env, "code must be 0..255");
  _exit(code);
}

/*
 * fixMmapThreshold(bytes): mallopt(M_MMAP_THRESHOLD). glibc otherwise raises its threshold to the
 * size of each mmapped block freed (up to 32 MiB) and its trim threshold to twice that, so after
 * a few large buffers every arena keeps tens of MB it no longer uses. A fixed threshold also
 * fixes the trim threshold (128 KiB): freed memory at an arena's top goes back to the system.
 * Process-wide, for the arenas of threads already started too.
 */
static napi_value FixMmapThreshold(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t bytes;
  if (get_args(env, info, 1, argv)) return NULL;
  if (napi_get_value_int32(env, argv[0], &bytes) != napi_ok || bytes <= 0) return throw_type(env, "bytes must be a positive integer");
  if (mallopt(M_MMAP_THRESHOLD, bytes) != 1) return throw_errno(env, EINVAL, "mallopt", "M_MMAP_THRESHOLD");
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
    {"mknod", NULL, Mknod, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lsetxattr", NULL, Lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lgetxattr", NULL, Lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"llistxattr", NULL, Llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lutimes", NULL, Lutimes, NULL, NULL, NULL, napi_enumerable, NULL},
    {"syncfs", NULL, Syncfs, NULL, NULL, NULL, napi_enumerable, NULL},
    {"openDir", NULL, OpenDir, NULL, NULL, NULL, napi_enumerable, NULL},
    {"openDirAt", NULL, OpenDirAt, NULL, NULL, NULL, napi_enumerable, NULL},
    {"openPathAt", NULL, OpenPathAt, NULL, NULL, NULL, napi_enumerable, NULL},
    {"openat2", NULL, Openat2, NULL, NULL, NULL, napi_enumerable, NULL},
    {"reopenRegular", NULL, ReopenRegular, NULL, NULL, NULL, napi_enumerable, NULL},
    {"fstat", NULL, Fstat, NULL, NULL, NULL, napi_enumerable, NULL},
    {"fstatat", NULL, Fstatat, NULL, NULL, NULL, napi_enumerable, NULL},
    {"readlinkat", NULL, Readlinkat, NULL, NULL, NULL, napi_enumerable, NULL},
    {"readDirFd", NULL, ReadDirFd, NULL, NULL, NULL, napi_enumerable, NULL},
    {"fgetxattr", NULL, Fgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"flistxattr", NULL, Flistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
    {"lgetxattrAt", NULL, LgetxattrAt, NULL, NULL, NULL, napi_enumerable, NULL},
    {"llistxattrAt", NULL, LlistxattrAt, NULL, NULL, NULL, napi_enumerable, NULL},
    {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
    {"spawnSession", NULL, SpawnSession, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sha256", NULL, Sha256, NULL, NULL, NULL, napi_enumerable, NULL},
    {"waitExit", NULL, WaitExit, NULL, NULL, NULL, napi_enumerable, NULL},
    {"exitNow", NULL, ExitNow, NULL, NULL, NULL, napi_enumerable, NULL},
    {"fixMmapThreshold", NULL, FixMmapThreshold, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  register_zstd_thread(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
