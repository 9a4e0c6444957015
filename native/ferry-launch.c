/*
 * ferry-launch: ferry's container launcher (DESIGN "Runtime").
 *
 * Node cannot create namespaces, pivot_root or exec from its multi-threaded process, so ferry
 * spawns this small program for exactly that; everything else (image config, users, state) is
 * TypeScript. Two modes:
 *
 *   ferry-launch run    start a container
 *   ferry-launch exec   start a process in a running container (setns into its namespaces)
 *
 * Protocol. The spec arrives on fd 3 as NUL-terminated "key=value" records until EOF (ferry shuts
 * down its write side). Status goes back on the same fd as lines:
 *   "pid N"              run: the container init's host pid; exec: the new process's host pid
 *   "error CODE MESSAGE" the start failed; CODE is the exit status that follows
 *                        (125 setup, 126 cannot execute, 127 not found)
 * EOF without an error line means the command was exec'd: fd 3 is close-on-exec in the command,
 * so the command's successful execve closes the last copy.
 *
 * Processes of `run`:
 *   monitor (host namespaces)
 *     └─ clone(NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET]) -> init, PID 1 of the container
 *          └─ fork -> the command (entrypoint + cmd, as the image's user)
 * The monitor forwards signals to init, relays the pty (-t), waits for init, writes the exit status
 * to the exit file (so it outlives ferry) and exits with it. init mounts the root filesystem in its
 * own mount namespace only (nothing reaches the host's mount table), pivots into it, then acts as
 * tini: reaps zombies, forwards signals to the command, exits with the command's status (128+N when
 * killed by signal N). When init exits the kernel kills whatever is left in the PID namespace, and
 * the mount namespace, overlay included, disappears with its last process. If the monitor dies,
 * init gets SIGKILL (PDEATHSIG), so a killed ferry never leaves a half-owned container behind.
 *
 * Security notes (research/runtime-and-unpack.md §2 and §5):
 * - the binary re-executes itself from a sealed memfd, so /proc/PID/exe never points at a
 *   writable host file (runc CVE-2019-5736); launcher processes are also non-dumpable.
 * - mount targets are resolved inside the root with openat2(RESOLVE_IN_ROOT), and /proc, /dev, /sys
 *   refuse any symlink (CVE-2019-19921 family); mounts go through /proc/self/fd/N of that handle.
 * - the root is mounted nodev (no device cgroup here); /dev is a nodev tmpfs whose few nodes are
 *   bind mounts of the host's; /proc and /sys are nosuid,nodev,noexec; /sys is read-only; docker's
 *   masked and read-only /proc paths are applied.
 * - the command keeps only fds 0-2 (everything else close-on-exec), changes to its working directory
 *   with no directory fd open and checks the result is inside the root (CVE-2024-21626), runs with
 *   docker's default capability set as root (bounding set dropped) or none as another user.
 * - docker's default seccomp filter, a fresh session keyring, the v1 device cgroup's rules.
 * Not done: user namespaces (rootless).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define STATUS_FD 3
#define EXIT_SETUP 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define SPEC_MAX (8 << 20)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Declared here so that older kernel headers still build (the calls fall back when unsupported). */
struct ferry_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define F_RESOLVE_NO_MAGICLINKS 0x02
#define F_RESOLVE_NO_SYMLINKS 0x04
#define F_RESOLVE_BENEATH 0x08
#define F_RESOLVE_IN_ROOT 0x10
#define F_CLOSE_RANGE_CLOEXEC (1U << 2)
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* ------------------------------------------------------------------------------------------ */
/* Errors: one line on the status fd, then exit with the code ferry will report. */

static int status_fd = STATUS_FD; /* -1 once this process has closed its copy */

static void status_line(const char *fmt, ...) {
  if (status_fd < 0) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
  for (int i = 0; i < n; i++)
    if (line[i] == '\n') line[i] = ' ';
  line[n++] = '\n';
  /* A dead reader (ferry gone) is not our problem: the write fails with EPIPE, SIGPIPE is blocked. */
  if (write(status_fd, line, (size_t)n) < 0) return;
}

static _Noreturn void fail_code(int code, int err, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (status_fd >= 0) {
    if (err) status_line("error %d %s: %s", code, msg, strerror(err));
    else status_line("error %d %s", code, msg);
  } else {
    if (err) dprintf(2, "ferry-launch: %s: %s\n", msg, strerror(err));
    else dprintf(2, "ferry-launch: %s\n", msg);
  }
  _exit(code);
}
#define fail(...) fail_code(EXIT_SETUP, errno, __VA_ARGS__)
#define failx(...) fail_code(EXIT_SETUP, 0, __VA_ARGS__)

/* ------------------------------------------------------------------------------------------ */
/* The spec. */

/* A volume (bind of a host path) or a tmpfs, mounted in the order given (ferry sorts by depth). */
struct bind {
  char *src;  /* host path; NULL for a tmpfs */
  char *dst;  /* path in the container */
  char *data; /* tmpfs: size=, mode=, uid=, gid=, nr_inodes= (checked by ferry) */
  bool ro;
  bool suid;   /* allow setuid/setgid bits (default: nosuid) */
  bool noexec; /* refuse executing from it (a tmpfs is noexec unless bind.exec) */
  bool exec;
};

struct spec {
  char *rootfs;   /* run: the (empty) directory the overlay is mounted on */
  char *mountcwd; /* run: lower/upper/work may be relative to this (keeps the option short) */
  char *upper, *work, *hostname, *cwd, *exitfile;
  char *oomfile; /* memory.oom_control (v1) or memory.events (v2): "oom_kill N" */
  char **lower; /* top layer first */
  size_t nlower;
  char **env;
  size_t nenv;
  char **argv;
  size_t nargv;
  gid_t *groups;
  size_t ngroups;
  struct bind *binds;
  size_t nbinds;
  struct cg_op *cgops; /* run: make the container's cgroups and set its limits, before the clone */
  size_t ncgops;
  char **cgroups; /* cgroup.procs files the container (or the exec'd process) joins */
  size_t ncgroups;
  int *cgroup_fds;
  uint64_t caps;     /* root's capabilities (effective, permitted, bounding) */
  bool caps_set;     /* else docker's default set */
  unsigned char *seccomp; /* struct sock_filter[], NULL: unconfined */
  size_t seccomp_len;     /* in instructions */
  bool privileged;
  pid_t netpid;                  /* --network container:NAME: that container's init */
  unsigned long long netpid_start; /* its start time, against pid reuse */
  int netns_fd;
  struct port *ports; /* -p: host listeners relayed into the container's network namespace */
  size_t nports;
  uid_t uid;
  gid_t gid;
  char *slirp; /* --network private: slirp4netns, the container's outbound network; NULL: loopback only */
  bool readonly, tty, interactive, netnone, nonewprivs, mkcwd;
  pid_t ppid;                  /* die when this parent dies (foreground); 0: detached */
  pid_t target;                /* exec: the container's init */
  unsigned long long target_start; /* exec: its start time, against pid reuse */
};

/* One step of ferry's cgroup plan (src/runtime/cgroups.ts decides, the launcher only acts:
 * a few mkdirs and writes cost microseconds here, tens of milliseconds from Node). */
enum cg_kind { CG_MKDIR, CG_INHERIT, CG_WRITE };
struct cg_op {
  enum cg_kind kind;
  char *path;
  char *value; /* CG_WRITE */
};

/* -p [IP:]HOST:CONTAINER[/udp]: "tcp:IP:HOST:CONTAINER" in the spec; IP "" is every address. */
struct port {
  bool udp;
  struct in_addr ip;
  int host, container;
  int fd; /* the host listener, bound before the container starts */
};

/* Grow an array so that index n fits. */
static void *grow(void *arr, size_t n, size_t size) {
  if (n != 0 && (n & (n - 1)) != 0) return arr;
  void *p = realloc(arr, (n == 0 ? 4 : n * 2) * size);
  if (p == NULL) failx("out of memory");
  return p;
}

static unsigned long long parse_num(const char *key, const char *v, unsigned long long max) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  /* containerd CVE-2024-40635: ids above 2^31-1 must not wrap to root. */
  if (errno != 0 || end == v || *end != '\0' || x > max) failx("spec: bad %s \"%s\"", key, v);
  return x;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The seccomp program arrives hex-encoded (records are NUL-terminated text). */
static void parse_seccomp(struct spec *s, const char *v) {
  size_t n = strlen(v);
  if (n == 0 || n % 16 != 0 || n / 16 > 4096) failx("spec: bad seccomp program (%zu hex digits)", n);
  s->seccomp = malloc(n / 2);
  if (s->seccomp == NULL) failx("out of memory");
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hex_value(v[2 * i]), lo = hex_value(v[2 * i + 1]);
    if (hi < 0 || lo < 0) failx("spec: bad seccomp program (not hex)");
    s->seccomp[i] = (unsigned char)(hi << 4 | lo);
  }
  s->seccomp_len = n / 16;
}

static void read_spec(struct spec *s) {
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) failx("out of memory");
  for (;;) {
    if (len == cap) {
      if (cap >= SPEC_MAX) failx("spec: larger than %d bytes", SPEC_MAX);
      cap *= 2;
      buf = realloc(buf, cap);
      if (buf == NULL) failx("out of memory");
    }
    ssize_t n = read(STATUS_FD, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read the spec from fd 3");
    if (n == 0) break;
    len += (size_t)n;
  }
  if (len == 0 || buf[len - 1] != '\0') failx("spec: empty or truncated");
  struct bind *cur = NULL;
  for (char *p = buf; p < buf + len;) {
    char *next = p + strlen(p) + 1;
    char *eq = strchr(p, '=');
    if (eq == NULL) failx("spec: record without '=': %s", p);
    *eq = '\0';
    const char *k = p;
    char *v = eq + 1;
    if (!strcmp(k, "rootfs")) s->rootfs = v;
    else if (!strcmp(k, "mountcwd")) s->mountcwd = v;
    else if (!strcmp(k, "lower")) {
      s->lower = grow(s->lower, s->nlower, sizeof *s->lower);
      s->lower[s->nlower++] = v;
    } else if (!strcmp(k, "upper")) s->upper = v;
    else if (!strcmp(k, "work")) s->work = v;
    else if (!strcmp(k, "readonly")) s->readonly = !strcmp(v, "1");
    else if (!strcmp(k, "hostname")) s->hostname = v;
    else if (!strcmp(k, "net")) {
      if (strcmp(v, "host") && strcmp(v, "none") && strcmp(v, "private")) failx("spec: bad net \"%s\"", v);
      /* none and private: a network namespace of its own with loopback; private publishes ports */
      s->netnone = strcmp(v, "host") != 0;
    } else if (!strcmp(k, "uid")) s->uid = (uid_t)parse_num(k, v, INT32_MAX);
    else if (!strcmp(k, "gid")) s->gid = (gid_t)parse_num(k, v, INT32_MAX);
    else if (!strcmp(k, "group")) {
      s->groups = grow(s->groups, s->ngroups, sizeof *s->groups);
      s->groups[s->ngroups++] = (gid_t)parse_num(k, v, INT32_MAX);
    } else if (!strcmp(k, "cwd")) s->cwd = v;
    else if (!strcmp(k, "mkcwd")) s->mkcwd = !strcmp(v, "1");
    else if (!strcmp(k, "env")) {
      s->env = grow(s->env, s->nenv, sizeof *s->env);
      s->env[s->nenv++] = v;
    } else if (!strcmp(k, "arg")) {
      s->argv = grow(s->argv, s->nargv, sizeof *s->argv);
      s->argv[s->nargv++] = v;
    } else if (!strcmp(k, "bind.src")) {
      s->binds = grow(s->binds, s->nbinds, sizeof *s->binds);
      cur = &s->binds[s->nbinds++];
      *cur = (struct bind){ .src = v };
    } else if (!strcmp(k, "tmpfs")) {
      /* A tmpfs entry: its destination follows as bind.dst. */
      s->binds = grow(s->binds, s->nbinds, sizeof *s->binds);
      cur = &s->binds[s->nbinds++];
      *cur = (struct bind){ .src = NULL, .data = v };
    } else if (!strncmp(k, "bind.", 5)) {
      if (cur == NULL) failx("spec: %s before bind.src", k);
      bool on = !strcmp(v, "1");
      if (!strcmp(k, "bind.dst")) cur->dst = v;
      else if (!strcmp(k, "bind.ro")) cur->ro = on;
      else if (!strcmp(k, "bind.suid")) cur->suid = on;
      else if (!strcmp(k, "bind.noexec")) cur->noexec = on;
      else if (!strcmp(k, "bind.exec")) cur->exec = on;
      else failx("spec: unknown key \"%s\"", k);
    } else if (!strcmp(k, "cg.mkdir") || !strcmp(k, "cg.inherit") || !strcmp(k, "cg.write")) {
      s->cgops = grow(s->cgops, s->ncgops, sizeof *s->cgops);
      s->cgops[s->ncgops++] = (struct cg_op){ .kind = !strcmp(k, "cg.mkdir") ? CG_MKDIR : !strcmp(k, "cg.inherit") ? CG_INHERIT : CG_WRITE, .path = v };
    } else if (!strcmp(k, "cg.value")) {
      if (s->ncgops == 0 || s->cgops[s->ncgops - 1].kind != CG_WRITE) failx("spec: cg.value without cg.write");
      s->cgops[s->ncgops - 1].value = v;
    } else if (!strcmp(k, "cgroup")) {
      s->cgroups = grow(s->cgroups, s->ncgroups, sizeof *s->cgroups);
      s->cgroups[s->ncgroups++] = v;
    } else if (!strcmp(k, "port")) {
      s->ports = grow(s->ports, s->nports, sizeof *s->ports);
      struct port *pt = &s->ports[s->nports++];
      char proto[8], ip[64];
      if (sscanf(v, "%7[a-z]:%63[0-9.]:%d:%d", proto, ip, &pt->host, &pt->container) != 4) {
        ip[0] = '\0';
        if (sscanf(v, "%7[a-z]::%d:%d", proto, &pt->host, &pt->container) != 3) failx("spec: bad port \"%s\"", v);
      }
      pt->udp = !strcmp(proto, "udp");
      if (!pt->udp && strcmp(proto, "tcp")) failx("spec: bad port protocol \"%s\"", v);
      pt->ip.s_addr = htonl(INADDR_ANY);
      if (ip[0] != '\0' && inet_pton(AF_INET, ip, &pt->ip) != 1) failx("spec: bad port address \"%s\"", v);
      if (pt->host < 0 || pt->host > 65535 || pt->container < 1 || pt->container > 65535) failx("spec: bad port \"%s\"", v);
      pt->fd = -1;
    } else if (!strcmp(k, "caps")) {
      s->caps = parse_num(k, v, UINT64_MAX);
      s->caps_set = true;
    } else if (!strcmp(k, "seccomp")) parse_seccomp(s, v);
    else if (!strcmp(k, "privileged")) s->privileged = !strcmp(v, "1"); else if (!strcmp(k, "tty")) s->tty = !strcmp(v, "1");
    else if (!strcmp(k, "stdin")) s->interactive = !strcmp(v, "1");
    else if (!strcmp(k, "nonewprivs")) s->nonewprivs = !strcmp(v, "1");
    else if (!strcmp(k, "exitfile")) s->exitfile = v;
    else if (!strcmp(k, "oomfile")) s->oomfile = v;
    else if (!strcmp(k, "slirp")) s->slirp = v;
    else if (!strcmp(k, "ppid")) s->ppid = (pid_t)parse_num(k, v, INT32_MAX);
    else if (!strcmp(k, "netpid")) s->netpid = (pid_t)parse_num(k, v, INT32_MAX);
    else if (!strcmp(k, "netpidstart")) s->netpid_start = parse_num(k, v, ULLONG_MAX);
    else if (!strcmp(k, "target")) s->target = (pid_t)parse_num(k, v, INT32_MAX);
    else if (!strcmp(k, "targetstart")) s->target_start = parse_num(k, v, ULLONG_MAX);
    else failx("spec: unknown key \"%s\"", k);
    p = next;
  }
  /* NULL-terminate the vectors execve takes. */
  s->argv = grow(s->argv, s->nargv, sizeof *s->argv);
  s->argv[s->nargv] = NULL;
  s->env = grow(s->env, s->nenv, sizeof *s->env);
  s->env[s->nenv] = NULL;
  if (s->nargv == 0) failx("spec: no command");
  if (s->cwd == NULL || s->cwd[0] != '/') failx("spec: the working directory must be absolute");
  for (size_t i = 0; i < s->nbinds; i++)
    if (s->binds[i].dst == NULL || s->binds[i].dst[0] != '/' || (s->binds[i].src != NULL && s->binds[i].src[0] != '/'))
      failx("spec: bind mounts need absolute source and destination");
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers. */

static int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* reader gone: drop the output, keep the container's status */
    p += w;
    n -= (size_t)w;
  }
}

static const char *env_get(char **env, const char *name) {
  size_t len = strlen(name);
  for (char **e = env; *e != NULL; e++)
    if (!strncmp(*e, name, len) && (*e)[len] == '=') return *e + len + 1;
  return NULL;
}

static void fd_path(char *buf, size_t size, int fd) {
  snprintf(buf, size, "/proc/self/fd/%d", fd);
}

/* runc CVE-2019-5736: run from a sealed in-memory copy, so /proc/PID/exe is never a host file. */
static void run_from_sealed_copy(char **argv) {
  const int want = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) fail("open /proc/self/exe");
  int seals = fcntl(self, F_GET_SEALS);
  if (seals >= 0 && (seals & want) == want) {
    close(self);
    return;
  }
  int mem = memfd_create("ferry-launch", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mem < 0) fail("memfd_create");
  struct stat st;
  if (fstat(self, &st) < 0) fail("stat /proc/self/exe");
  for (off_t done = 0; done < st.st_size;) {
    ssize_t n = sendfile(mem, self, NULL, (size_t)(st.st_size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("copy the launcher into memory");
    done += n;
  }
  if (fcntl(mem, F_ADD_SEALS, want) < 0) fail("seal the launcher copy");
  close(self);
  /* A fixed argv: the container's `ps` shows "ferry-launch run" as PID 1, not a host path. */
  char *const args[] = { "ferry-launch", argv[1], NULL };
  fexecve(mem, args, environ);
  fail("re-execute the sealed launcher");
}

/* ------------------------------------------------------------------------------------------ */
/* Resolving paths inside the container's root. */

enum resolve_mode {
  NO_SYMLINKS, /* /proc, /dev, /sys: any symlink is refused (runc checkProcMount) */
  IN_ROOT,     /* volumes, /etc files: symlinks resolve as if the root were "/" */
};

static bool have_openat2 = true;

/* Before openat2 (Linux 5.6): walk component by component, refusing symlinks and "..". */
static int walk_nofollow(int root, const char *rel) {
  char copy[PATH_MAX];
  if (strlen(rel) >= sizeof copy) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(copy, rel);
  int fd = fcntl(root, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return -1;
  char *save = NULL;
  for (char *c = strtok_r(copy, "/", &save); c != NULL; c = strtok_r(NULL, "/", &save)) {
    if (!strcmp(c, ".")) continue;
    if (!strcmp(c, "..")) {
      close(fd);
      errno = EXDEV;
      return -1;
    }
    int next = openat(fd, c, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    if (next < 0) return -1;
    struct stat st;
    if (fstat(next, &st) < 0 || S_ISLNK(st.st_mode)) {
      close(next);
      errno = ELOOP;
      return -1;
    }
    fd = next;
  }
  return fd;
}

/* An O_PATH handle of `path` (absolute, in the container's view) under the root. */
static int lookup(int root, const char *path, enum resolve_mode mode) {
  const char *rel = path;
  while (*rel == '/') rel++;
  if (*rel == '\0') rel = ".";
  if (have_openat2) {
    struct ferry_open_how how = {
      .flags = O_PATH | O_CLOEXEC,
      .resolve = F_RESOLVE_NO_MAGICLINKS | (mode == NO_SYMLINKS ? F_RESOLVE_NO_SYMLINKS | F_RESOLVE_BENEATH : F_RESOLVE_IN_ROOT),
    };
    int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return fd;
    have_openat2 = false;
  }
  return walk_nofollow(root, rel);
}

/*
 * Like lookup, creating a missing path (parents as 0755 directories; the last one a directory or
 * an empty file). A dangling symlink on the way gets its target made, inside the root, as docker's
 * FollowSymlinkInScope does; `depth` bounds symlink loops.
 */
static int ensure_at_depth(int root, const char *path, bool file, enum resolve_mode mode, int depth) {
  int fd = lookup(root, path, mode);
  if (fd >= 0) return fd;
  if (errno != ENOENT || depth > 40) fail("resolve %s in the container", path);
  char parent[PATH_MAX];
  if (strlen(path) >= sizeof parent) failx("path too long: %s", path);
  strcpy(parent, path);
  char *slash = strrchr(parent, '/');
  if (slash == NULL || slash[1] == '\0') fail("resolve %s in the container", path);
  const char *base = path + (slash - parent) + 1;
  if (slash == parent) slash[1] = '\0';
  else *slash = '\0';
  int pfd = ensure_at_depth(root, parent, false, mode, depth + 1);
  int r = file ? openat(pfd, base, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644) : mkdirat(pfd, base, 0755);
  if (r < 0 && errno != EEXIST) fail("create mount point %s in the container", path);
  if (file && r >= 0) close(r);
  if (r < 0 && mode == IN_ROOT) {
    char link[PATH_MAX], target[PATH_MAX * 2];
    ssize_t n = readlinkat(pfd, base, link, sizeof link - 1);
    if (n > 0) {
      link[n] = '\0';
      if (link[0] == '/') snprintf(target, sizeof target, "%s", link);
      else snprintf(target, sizeof target, "%s/%s", parent, link);
      close(ensure_at_depth(root, target, file, mode, depth + 1));
    }
  }
  close(pfd);
  fd = lookup(root, path, mode);
  if (fd < 0) fail("resolve %s in the container", path);
  return fd;
}

static int ensure(int root, const char *path, bool file, enum resolve_mode mode) {
  return ensure_at_depth(root, path, file, mode, 0);
}

static void mount_at(int root, const char *dst, bool file, enum resolve_mode mode, const char *src, const char *type,
                     unsigned long flags, const char *data) {
  int fd = ensure(root, dst, file, mode);
  char p[64];
  fd_path(p, sizeof p, fd);
  if (mount(src, p, type, flags, data) < 0) fail("mount %s on %s", type != NULL ? type : src, dst);
  close(fd);
}

/* Add `add` (MS_RDONLY, MS_NODEV, MS_NOSUID, MS_NOEXEC) to the mount at dst, keeping the flags
 * the kernel would otherwise refuse to drop. */
static void remount_with(int root, const char *dst, enum resolve_mode mode, unsigned long add) {
  int fd = lookup(root, dst, mode);
  if (fd < 0) fail("resolve %s in the container", dst);
  struct statvfs sv;
  if (fstatvfs(fd, &sv) < 0) fail("statvfs %s", dst);
  unsigned long flags = MS_BIND | MS_REMOUNT | add;
  if (sv.f_flag & ST_RDONLY) flags |= MS_RDONLY;
  if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  char p[64];
  fd_path(p, sizeof p, fd);
  if (mount(NULL, p, NULL, flags, NULL) < 0) fail("remount %s%s%s%s", dst, (add & MS_RDONLY) ? " read-only" : "",
                                                   (add & MS_NODEV) ? " nodev" : "", (add & MS_NOSUID) ? " nosuid" : "");
  close(fd);
}

static void remount_ro(int root, const char *dst, enum resolve_mode mode) {
  remount_with(root, dst, mode, MS_RDONLY);
}

/* Bind src on dst, then remount it with `add` (a bind mount takes its flags only on remount). */
static void bind_at(int root, const char *src, const char *dst, unsigned long add, enum resolve_mode mode) {
  struct stat st;
  if (stat(src, &st) < 0) fail("bind %s", src);
  mount_at(root, dst, !S_ISDIR(st.st_mode), mode, src, NULL, MS_BIND | MS_REC, NULL);
  if (add != 0) remount_with(root, dst, mode, add);
}

/* Every mount the container can write is nodev: a node it makes there never opens a host device. */
static void mount_volume(int root, const struct bind *b) {
  unsigned long flags = MS_NODEV | (b->ro ? MS_RDONLY : 0) | (b->suid ? 0 : MS_NOSUID);
  if (b->src == NULL) {
    /* docker --tmpfs: noexec unless asked */
    if (!b->exec) flags |= MS_NOEXEC;
    mount_at(root, b->dst, false, IN_ROOT, "tmpfs", "tmpfs", flags, b->data);
    return;
  }
  if (b->noexec) flags |= MS_NOEXEC;
  bind_at(root, b->src, b->dst, flags, IN_ROOT);
}

/* ------------------------------------------------------------------------------------------ */
/* The container's filesystem. */

static void mount_overlay(const struct spec *s) {
  if (s->nlower == 0 || s->upper == NULL || s->work == NULL || s->rootfs == NULL) failx("spec: incomplete root filesystem");
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *opts = calloc(1, page + 1);
  if (opts == NULL) failx("out of memory");
  size_t len = 0;
  bool too_long = false;
#define APPEND(str)                                            \
  do {                                                         \
    size_t l_ = strlen(str);                                   \
    if (len + l_ >= page) too_long = true;                     \
    else {                                                     \
      memcpy(opts + len, str, l_);                             \
      len += l_;                                               \
    }                                                          \
  } while (0)
  APPEND("lowerdir=");
  for (size_t i = 0; i < s->nlower; i++) {
    /* ':' separates lowerdirs and ',' options: ferry's own paths never hold them. */
    if (strpbrk(s->lower[i], ":,\\") != NULL) failx("layer path %s holds ':', ',' or '\\'", s->lower[i]);
    if (i > 0) APPEND(":");
    APPEND(s->lower[i]);
  }
  if (strpbrk(s->upper, ":,\\") != NULL || strpbrk(s->work, ":,\\") != NULL) failx("container path holds ':', ',' or '\\'");
  APPEND(",upperdir=");
  APPEND(s->upper);
  APPEND(",workdir=");
  APPEND(s->work);
  /* index=off: no inode index shared across mounts of these lowers (EBUSY otherwise).
   * redirect_dir and metacopy off: every change stays a plain file, whiteout or opaque dir in
   * upper/, which is what diff and commit read; and crafted xattrs in layers are not followed. */
  APPEND(",index=off,redirect_dir=off");
  size_t without_metacopy = len;
  APPEND(",metacopy=off");
#undef APPEND
  if (too_long)
    failx("the image has too many layers for one overlay mount: %zu layers do not fit the %zu-byte mount option", s->nlower, page);
  if (s->mountcwd != NULL && chdir(s->mountcwd) < 0) fail("chdir %s", s->mountcwd);
  /* nodev: there is no device cgroup, so device nodes in the image or made by the container
   * must not open host devices. setuid programs keep working, as in docker. */
  if (mount("overlay", s->rootfs, "overlay", MS_NODEV, opts) < 0) {
    if (errno != EINVAL) fail("mount the overlay root filesystem (%zu layers) on %s", s->nlower, s->rootfs);
    /* Kernels before 4.19 do not know metacopy= (and have no metacopy). */
    opts[without_metacopy] = '\0';
    if (mount("overlay", s->rootfs, "overlay", MS_NODEV, opts) < 0)
      fail("mount the overlay root filesystem (%zu layers) on %s", s->nlower, s->rootfs);
  }
  free(opts);
}

/* --privileged: every device node at the top of the host's /dev, as docker gives it. */
static void bind_host_devices(int root) {
  DIR *d = opendir("/dev");
  if (d == NULL) fail("list the host's /dev");
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue; /* gone meanwhile */
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) continue;
    if (!strcmp(e->d_name, "ptmx") || !strcmp(e->d_name, "console")) continue;
    char host[PATH_MAX], dst[PATH_MAX];
    snprintf(host, sizeof host, "/dev/%s", e->d_name);
    snprintf(dst, sizeof dst, "/dev/%s", e->d_name);
    int fd = lookup(root, dst, NO_SYMLINKS);
    if (fd >= 0) {
      close(fd); /* one of the standard nodes, already there */
      continue;
    }
    bind_at(root, host, dst, MS_NOSUID | MS_NOEXEC, NO_SYMLINKS);
  }
  closedir(d);
}

static void setup_dev(int root, bool privileged) {
  mount_at(root, "/dev", false, NO_SYMLINKS, "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC | (privileged ? 0 : MS_NODEV), "mode=755,size=65536k");
  /* The tmpfs is nodev, so mknod by the container gives nodes that cannot be opened; these few
   * are bind mounts of the host's own nodes, which keep their mount's (dev-allowing) flags. */
  static const char *nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
  for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
    char host[32], dst[32];
    snprintf(host, sizeof host, "/dev/%s", nodes[i]);
    snprintf(dst, sizeof dst, "/dev/%s", nodes[i]);
    bind_at(root, host, dst, MS_NOSUID | MS_NOEXEC, NO_SYMLINKS);
  }
  if (privileged) bind_host_devices(root);
  int dev = lookup(root, "/dev", NO_SYMLINKS);
  if (dev < 0) fail("resolve /dev");
  static const char *links[][2] = {
    { "/proc/self/fd", "fd" },     { "/proc/self/fd/0", "stdin" }, { "/proc/self/fd/1", "stdout" },
    { "/proc/self/fd/2", "stderr" }, { "pts/ptmx", "ptmx" },         { "/proc/kcore", "core" },
  };
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
    if (symlinkat(links[i][0], dev, links[i][1]) < 0) fail("symlink /dev/%s", links[i][1]);
  close(dev);
  mount_at(root, "/dev/pts", false, NO_SYMLINKS, "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
  mount_at(root, "/dev/shm", false, NO_SYMLINKS, "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  int mq = ensure(root, "/dev/mqueue", false, NO_SYMLINKS);
  char p[64];
  fd_path(p, sizeof p, mq);
  /* POSIX message queues are optional in the kernel: no mqueue, no /dev/mqueue mount. */
  if (mount("mqueue", p, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 && errno != ENODEV) fail("mount mqueue on /dev/mqueue");
  close(mq);
}

/* Hide one path: an empty read-only tmpfs over a directory, /dev/null over a file. */
static void mask_path(int root, const char *path) {
  int fd = lookup(root, path, NO_SYMLINKS);
  if (fd < 0) {
    if (errno == ENOENT) return;
    fail("resolve %s", path);
  }
  struct stat st;
  if (fstat(fd, &st) < 0) fail("stat %s", path);
  char p[64];
  fd_path(p, sizeof p, fd);
  int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
                              : mount("/dev/null", p, NULL, MS_BIND, NULL);
  if (r < 0) fail("mask %s", path);
  close(fd);
}

/* moby's thermal_throttle entries: one per CPU, so they are found by listing the container's /sys. */
static void mask_thermal_throttle(int root) {
  int cpus = lookup(root, "/sys/devices/system/cpu", NO_SYMLINKS);
  if (cpus < 0) {
    if (errno == ENOENT) return;
    fail("resolve /sys/devices/system/cpu");
  }
  int dfd = openat(cpus, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  close(cpus);
  if (dfd < 0) fail("open /sys/devices/system/cpu");
  DIR *d = fdopendir(dfd);
  if (d == NULL) fail("list /sys/devices/system/cpu");
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    const char *n = e->d_name;
    if (strncmp(n, "cpu", 3) != 0 || n[3] < '0' || n[3] > '9' || strspn(n + 3, "0123456789") != strlen(n + 3)) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/thermal_throttle", n);
    mask_path(root, path);
  }
  closedir(d);
}

/* docker's defaults (moby oci/defaults.go, current list): hide kernel internals and keep
 * /proc/sys and friends read-only. */
static void mask_paths(int root) {
  static const char *masked[] = {
    "/proc/acpi",        "/proc/asound",      "/proc/interrupts", "/proc/kcore",   "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",     "/sys/devices/virtual/powercap",
  };
  for (size_t i = 0; i < sizeof masked / sizeof masked[0]; i++) mask_path(root, masked[i]);
  mask_thermal_throttle(root);
  static const char *readonly[] = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" };
  for (size_t i = 0; i < sizeof readonly / sizeof readonly[0]; i++) {
    int fd = lookup(root, readonly[i], NO_SYMLINKS);
    if (fd < 0) {
      if (errno == ENOENT) continue;
      fail("resolve %s", readonly[i]);
    }
    char p[64];
    fd_path(p, sizeof p, fd);
    if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) fail("bind %s", readonly[i]);
    close(fd);
    remount_ro(root, readonly[i], NO_SYMLINKS);
  }
}

static void send_fd(int sock, int fd) {
  char byte = 'm';
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (sendmsg(sock, &msg, 0) < 0) fail("pass the terminal to the monitor");
}

/* The fd sent by send_fd, or -1 when the sender exited first. */
static int recv_fd(int sock) {
  char byte;
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (c == NULL || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

/* A pty from the devpts instance at /dev/pts (the container's): master and slave. */
static void open_pty(int *master, int *slave) {
  *master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (*master < 0) fail("open /dev/pts/ptmx");
  int unlock = 0;
  if (ioctl(*master, TIOCSPTLCK, &unlock) < 0) fail("unlock the pty");
  *slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (*slave < 0) {
    /* Before Linux 4.13: open it by name (we are inside the container's root already). */
    char name[64];
    if (ptsname_r(*master, name, sizeof name) != 0) fail("ptsname");
    *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) fail("open %s", name);
  }
}

static void mkdir_p(const char *path) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) failx("path too long: %s", path);
  strcpy(buf, path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, 0755) < 0 && errno != EEXIST) fail("create the working directory %s", path);
      *p = c;
      if (c == '\0') break;
    }
  }
}

static void loopback_up(void) {
  int sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sk < 0) fail("socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sk, SIOCGIFFLAGS, &ifr) < 0) fail("read the loopback interface's flags");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(sk, SIOCSIFFLAGS, &ifr) < 0) fail("bring the loopback interface up");
  close(sk);
}

/*
 * In init, in its fresh namespaces: everything from the overlay to pivot_root. Returns the pty
 * slave for the command (-1 without -t); the master went to the monitor over `ttysock`.
 */
static int setup_container(const struct spec *s, int ttysock) {
  /* Nothing we mount may propagate back to the host (the host's / is usually shared). */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail("make / private");
  mount_overlay(s);
  int root = open(s->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) fail("open %s", s->rootfs);
  /* procfs belongs to the PID namespace of its mounter: this one shows the container's. */
  mount_at(root, "/proc", false, NO_SYMLINKS, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  setup_dev(root, s->privileged);
  /* --privileged: /sys writable and nothing masked, as docker does. */
  mount_at(root, "/sys", false, NO_SYMLINKS, "sysfs", "sysfs", (s->privileged ? 0 : MS_RDONLY) | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  if (!s->privileged) mask_paths(root);
  /* /etc/hosts, /etc/hostname, /etc/resolv.conf and -v volumes, in the order given (ferry sorts
   * them by depth, so a volume inside another lands on top of it). */
  for (size_t i = 0; i < s->nbinds; i++) mount_volume(root, &s->binds[i]);
  /* pivot_root, not chroot: the host's tree must become unreachable, not just out of sight. */
  if (fchdir(root) < 0) fail("chdir into the root filesystem");
  if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root");
  if (umount2(".", MNT_DETACH) < 0) fail("detach the host's root");
  if (chdir("/") < 0) fail("chdir /");
  close(root);
  if (s->mkcwd) mkdir_p(s->cwd);
  if (s->readonly && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NODEV, NULL) < 0) fail("remount the root read-only");
  int slave = -1;
  if (s->tty) {
    int master;
    open_pty(&master, &slave);
    send_fd(ttysock, master);
    close(master);
  }
  if (ttysock >= 0) close(ttysock);
  return slave;
}

/* ------------------------------------------------------------------------------------------ */
/* Becoming the command. */

/* docker's default capability set for root in a container. */
static uint64_t default_caps(void) {
  static const int caps[] = {
    CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,      CAP_MKNOD, CAP_NET_RAW,     CAP_SETGID,
    CAP_SETUID, CAP_SETFCAP,      CAP_SETPCAP,          CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE,
  };
  uint64_t m = 0;
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) m |= 1ULL << caps[i];
  return m;
}

/* The filter ferry compiled (src/runtime/seccomp). Installed while still root with every
 * capability, so it needs no no_new_privs (runc does the same); the profile allows the few calls
 * made after it: setresuid, capset, prctl, execve. */
static void install_seccomp(const struct spec *s) {
  if (s->seccomp == NULL) return;
  struct sock_fprog prog = { .len = (unsigned short)s->seccomp_len, .filter = (struct sock_filter *)s->seccomp };
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) fail("install the seccomp filter");
}

/* runc: a fresh session keyring, so the container never sees the keys of whoever started ferry.
 * A kernel without keys (ENOSYS) has nothing to leak. */
static void new_session_keyring(void) {
  if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS) fail("create a session keyring");
}

/* Join the container's cgroups (devices, freezer): "0" is the writing process itself. */
static void join_cgroups(const struct spec *s) {
  for (size_t i = 0; i < s->ncgroups; i++) {
    if (write(s->cgroup_fds[i], "0", 1) != 1) fail("join cgroup %s", s->cgroups[i]);
    close(s->cgroup_fds[i]);
  }
}

static void cg_write(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) fail("cgroup: open %s", path);
  size_t n = strlen(value);
  if (write(fd, value, n) != (ssize_t)n) fail("cgroup: write \"%s\" to %s", value, path);
  close(fd);
}

/* v1 cpuset: a new node has no CPUs or memory nodes until it gets its parent's. */
static void cg_inherit(const char *path) {
  char buf[4096], parent[PATH_MAX];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cgroup: open %s", path);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n > 1 || (n == 1 && buf[0] != '\n')) return; /* already set */
  const char *slash = strrchr(path, '/');
  if (slash == NULL) failx("cgroup: bad path %s", path);
  int dirlen = (int)(slash - path);
  const char *up = dirlen > 0 ? memrchr(path, '/', (size_t)dirlen) : NULL;
  if (up == NULL) failx("cgroup: bad path %s", path);
  snprintf(parent, sizeof parent, "%.*s%s", (int)(up - path), path, slash);
  fd = open(parent, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cgroup: open %s", parent);
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n < 0) fail("cgroup: read %s", parent);
  buf[n] = '\0';
  cg_write(path, buf);
}

static void apply_cgroup_plan(const struct spec *s) {
  for (size_t i = 0; i < s->ncgops; i++) {
    const struct cg_op *op = &s->cgops[i];
    if (op->kind == CG_MKDIR) {
      if (mkdir(op->path, 0755) < 0 && errno != EEXIST) fail("cgroup: create %s", op->path);
    } else if (op->kind == CG_INHERIT) cg_inherit(op->path);
    else cg_write(op->path, op->value != NULL ? op->value : "");
  }
}

/* Opened in the host's view (before pivot_root or setns), written from inside. */
static void open_cgroups(struct spec *s) {
  if (s->ncgroups == 0) return;
  s->cgroup_fds = calloc(s->ncgroups, sizeof *s->cgroup_fds);
  if (s->cgroup_fds == NULL) failx("out of memory");
  for (size_t i = 0; i < s->ncgroups; i++) {
    s->cgroup_fds[i] = open(s->cgroups[i], O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (s->cgroup_fds[i] < 0) fail("open cgroup %s", s->cgroups[i]);
  }
}

static void become_user(const struct spec *s) {
  uint64_t keep = s->caps_set ? s->caps : default_caps();
  /* The bounding set caps what any later execve (setuid or file caps included) can gain. */
  uint64_t known = 0;
  for (int c = 0; c < 64; c++) {
    if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) < 0) break; /* past the kernel's last capability */
    known |= 1ULL << c;
    if (keep & (1ULL << c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) fail("drop capability %d", c);
  }
  /* --privileged asks for all: only those this kernel has and ferry itself holds. */
  struct __user_cap_header_struct ch = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct cd[2];
  if (syscall(SYS_capget, &ch, cd) < 0) fail("read capabilities");
  keep &= known & ((uint64_t)cd[1].permitted << 32 | cd[0].permitted);
  if (setgroups(s->ngroups, s->groups) < 0) fail("setgroups");
  if (setresgid(s->gid, s->gid, s->gid) < 0) fail("setgid %u", (unsigned)s->gid);
  install_seccomp(s);
  /* Leaving uid 0 clears every capability (no KEEPCAPS): a non-root user gets none. */
  if (setresuid(s->uid, s->uid, s->uid) < 0) fail("setuid %u", (unsigned)s->uid);
  if (s->uid == 0) {
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].effective = d[0].permitted = (uint32_t)keep;
    d[1].effective = d[1].permitted = (uint32_t)(keep >> 32);
    if (syscall(SYS_capset, &h, d) < 0) fail("set capabilities");
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) fail("clear ambient capabilities");
  if (s->nonewprivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("set no_new_privs");
}

static _Noreturn void exec_failed(const char *file, int err, bool searched) {
  if (err == ENOENT) {
    if (searched) fail_code(EXIT_NOT_FOUND, 0, "exec %s: executable file not found in $PATH", file);
    fail_code(EXIT_NOT_FOUND, 0, "exec %s: no such file or directory", file);
  }
  fail_code(EXIT_CANNOT_EXEC, err, "exec %s", file);
}

/* execve with a $PATH search in the container's environment (execvpe would use ours). */
static _Noreturn void exec_command(const struct spec *s) {
  const char *file = s->argv[0];
  if (strchr(file, '/') != NULL) {
    execve(file, s->argv, s->env);
    exec_failed(file, errno, false);
  }
  const char *path = env_get(s->env, "PATH");
  if (path == NULL) path = DEFAULT_PATH;
  int saved = ENOENT;
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    char full[PATH_MAX];
    int n = end == p ? snprintf(full, sizeof full, "%s", file) : snprintf(full, sizeof full, "%.*s/%s", (int)(end - p), p, file);
    if (n > 0 && (size_t)n < sizeof full) {
      execve(full, s->argv, s->env);
      if (errno == EACCES) saved = EACCES;
      else if (errno != ENOENT && errno != ENOTDIR) {
        saved = errno;
        break;
      }
    }
    if (*end == '\0') break;
    p = end;
  }
  exec_failed(file, saved, true);
}

/* Every fd from 3 up becomes close-on-exec: the command inherits only stdin, stdout, stderr. */
static void cloexec_from(int first) {
  if (syscall(SYS_close_range, (unsigned)first, ~0U, F_CLOSE_RANGE_CLOEXEC) == 0) return;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) fail("list open files");
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    int fd = atoi(e->d_name);
    if (fd >= first && fd != dirfd(d)) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  closedir(d);
}

/* In the forked child, in the container: from here on, nothing returns. */
static _Noreturn void start_command(const struct spec *s, int slave) {
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (setsid() < 0) fail("setsid");
  if (slave >= 0) {
    if (ioctl(slave, TIOCSCTTY, 0) < 0) fail("make the pty the controlling terminal");
    /* So that a non-root command can reopen its terminal (/dev/stdin, /dev/tty). */
    if (fchown(slave, s->uid, s->gid) < 0) fail("chown the pty");
    for (int fd = 0; fd < 3; fd++)
      if (dup2(slave, fd) < 0) fail("dup2");
    if (slave > 2) close(slave);
  }
  new_session_keyring();
  cloexec_from(3);
  umask(022);
  /* runc CVE-2024-21626: no directory fd is open here, and the result must be inside the root. */
  if (chdir(s->cwd) < 0) fail_code(EXIT_SETUP, errno, "chdir to the working directory %s", s->cwd);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == NULL || cwd[0] != '/') failx("working directory %s is outside the container", s->cwd);
  become_user(s);
  exec_command(s);
}

/* ------------------------------------------------------------------------------------------ */
/* init (PID 1) and the monitor. */

/* tini: forward every signal to the command, reap every child, exit with the command's status. */
static _Noreturn void reap_and_forward(pid_t child) {
  sigset_t all;
  sigfillset(&all);
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&all, &si);
    if (sig < 0) {
      if (errno == EINTR) continue;
      _exit(EXIT_SETUP);
    }
    if (sig == SIGCHLD) {
      int st;
      pid_t p;
      while ((p = waitpid(-1, &st, WNOHANG)) > 0)
        if (p == child) _exit(exit_code(st)); /* the kernel then kills the rest of the namespace */
      continue;
    }
    kill(child, sig);
  }
}

struct init_args {
  struct spec *spec;
  int ttysock;
  int go[2]; /* the monitor writes a byte once the network is ready (slirp4netns); -1: no wait */
};

static int init_main(void *arg) {
  struct init_args *a = arg;
  const struct spec *s = a->spec;
  /* If the monitor dies, so does the container (and with it the mount namespace). */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) fail("prctl PDEATHSIG");
  /* Into the container's cgroups before anything runs: the device rules hold from the start. */
  join_cgroups(s);
  /* The host's listeners belong to the monitor and its proxy, not to the container. */
  for (size_t i = 0; i < s->nports; i++) close(s->ports[i].fd);
  if (s->netns_fd >= 0) {
    if (setns(s->netns_fd, CLONE_NEWNET) < 0) fail("join the network namespace of container process %d", (int)s->netpid);
    close(s->netns_fd);
  }
  /* Its own session: a terminal's ^C reaches the monitor, which forwards it once. */
  if (setsid() < 0) fail("setsid");
  int slave = setup_container(s, a->ttysock);
  if (s->hostname != NULL && sethostname(s->hostname, strlen(s->hostname)) < 0) fail("sethostname %s", s->hostname);
  if (s->netnone && s->netpid == 0) loopback_up();
  if (a->go[0] >= 0) {
    /* The command starts only once its outbound network is up (the monitor runs slirp4netns). */
    close(a->go[1]);
    char byte;
    ssize_t n;
    do n = read(a->go[0], &byte, 1); while (n < 0 && errno == EINTR);
    if (n != 1) failx("the container's network was not set up");
    close(a->go[0]);
  }
  pid_t child = fork();
  if (child < 0) fail("fork");
  if (child == 0) start_command(s, slave);
  if (slave >= 0) close(slave);
  /* The command holds the last copy of the status fd; its execve closes it. */
  close(STATUS_FD);
  status_fd = -1;
  reap_and_forward(child);
}

static struct termios saved_termios;
static bool termios_saved;

static void copy_winsize(int master) {
  struct winsize ws;
  if (ioctl(0, TIOCGWINSZ, &ws) == 0) ioctl(master, TIOCSWINSZ, &ws);
}

/*
 * Wait for `child`, forwarding signals to it; with a pty, relay stdin -> master -> stdout and
 * follow the window size. Returns the child's exit code.
 */
static int supervise(pid_t child, int master, bool interactive, int deathsig) {
  sigset_t all;
  sigfillset(&all);
  int sfd = signalfd(-1, &all, SFD_CLOEXEC);
  if (sfd < 0) fail("signalfd");
  bool stdin_open = master >= 0 && interactive;
  if (master >= 0) {
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    if (isatty(0)) {
      copy_winsize(master);
      if (interactive && tcgetattr(0, &saved_termios) == 0) {
        struct termios raw = saved_termios;
        cfmakeraw(&raw);
        if (tcsetattr(0, TCSANOW, &raw) == 0) termios_saved = true;
      }
    }
  }
  char in[8192], out[16384];
  size_t in_len = 0, in_off = 0;
  int code = -1;
  while (code < 0) {
    struct pollfd p[3] = { { .fd = sfd, .events = POLLIN }, { .fd = -1 }, { .fd = -1 } };
    if (master >= 0) p[1] = (struct pollfd){ .fd = master, .events = POLLIN | (in_len > in_off ? POLLOUT : 0) };
    if (stdin_open && in_len == in_off) p[2] = (struct pollfd){ .fd = 0, .events = POLLIN };
    if (poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        int sig = (int)si.ssi_signo;
        if (sig == SIGCHLD) {
          int st;
          if (waitpid(child, &st, WNOHANG) == child) code = exit_code(st);
        } else if (sig == deathsig) {
          kill(child, SIGKILL); /* ferry died: take the container down with it */
        } else if (sig == SIGWINCH) {
          if (master >= 0) copy_winsize(master);
        } else if (sig != SIGPIPE) {
          kill(child, sig);
        }
      }
    }
    if (master >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(master, out, sizeof out);
      if (n > 0) write_all(1, out, (size_t)n);
      else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(master); /* EIO: every slave is closed */
        master = -1;
      }
    }
    if (master >= 0 && (p[1].revents & POLLOUT) && in_len > in_off) {
      ssize_t n = write(master, in + in_off, in_len - in_off);
      if (n > 0) in_off += (size_t)n;
      if (in_off == in_len) in_off = in_len = 0;
    }
    if (p[2].fd >= 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(0, in, sizeof in);
      if (n > 0) {
        in_len = (size_t)n;
        in_off = 0;
      } else if (n == 0 || errno != EINTR) {
        stdin_open = false;
      }
    }
  }
  /* Output still buffered in the pty when the last process exited. */
  while (master >= 0) {
    ssize_t n = read(master, out, sizeof out);
    if (n <= 0) break;
    write_all(1, out, (size_t)n);
  }
  if (termios_saved) tcsetattr(0, TCSANOW, &saved_termios);
  return code;
}

/* Whether the kernel's OOM killer acted in the container's memory cgroup. */
static bool oom_killed(const char *path) {
  if (path == NULL) return false;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  for (char *line = buf; line != NULL && *line != '\0';) {
    unsigned long long count;
    if (sscanf(line, "oom_kill %llu", &count) == 1 && count > 0) return true;
    line = strchr(line, '\n');
    if (line != NULL) line++;
  }
  return false;
}

static void write_exit_file(const char *path, int code, bool oom) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return;
  dprintf(fd, oom ? "%d oom\n" : "%d\n", code);
  fsync(fd);
  close(fd);
  rename(tmp, path);
}

static void die_with_parent(const struct spec *s, int sig) {
  if (s->ppid == 0) return;
  if (prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) < 0) fail("prctl PDEATHSIG");
  if (getppid() != s->ppid) failx("ferry exited before the container started");
}

/* ------------------------------------------------------------------------------------------ */
/* Published ports (RootlessKit's port driver design): the monitor binds the host's listeners
 * before the container starts (a port in use fails the start), and a proxy process, which
 * joins the container's network namespace, relays each connection to 127.0.0.1:PORT there.
 * No firewall rule, so nothing to lose on a firewall reload and nothing left after the container. */

static void open_ports(struct spec *s) {
  for (size_t i = 0; i < s->nports; i++) {
    struct port *pt = &s->ports[i];
    const char *proto = pt->udp ? "udp" : "tcp";
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &pt->ip, ip, sizeof ip);
    pt->fd = socket(AF_INET, (pt->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (pt->fd < 0) fail("socket for port %d/%s", pt->host, proto);
    int one = 1;
    if (!pt->udp) setsockopt(pt->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)pt->host), .sin_addr = pt->ip };
    if (bind(pt->fd, (struct sockaddr *)&a, sizeof a) < 0) {
      if (errno == EADDRINUSE) failx("publish port %s:%d/%s: the port is already in use on the host", ip, pt->host, proto);
      fail("publish port %s:%d/%s", ip, pt->host, proto);
    }
    if (!pt->udp && listen(pt->fd, 128) < 0) fail("listen on port %s:%d/%s", ip, pt->host, proto);
    socklen_t len = sizeof a;
    if (getsockname(pt->fd, (struct sockaddr *)&a, &len) == 0) pt->host = ntohs(a.sin_port); /* -P: the port the kernel chose */
    status_line("port %s %s %d %d", proto, ip, pt->host, pt->container);
  }
}

#define RELAY_BUF 65536
#define MAX_CONNS 512
#define MAX_FLOWS 256
#define UDP_IDLE_SECONDS 60

struct relay_dir {
  char buf[RELAY_BUF];
  size_t len, off;
  bool eof; /* the reader saw EOF: shut the writer's side once the buffer is flushed */
};

struct conn {
  int client, target; /* host side, container side */
  bool connecting;
  struct relay_dir up, down; /* client -> target, target -> client */
};

struct flow {
  int fd;           /* connected UDP socket in the container's namespace */
  int listener;     /* the host socket replies go out on */
  struct sockaddr_in peer;
  time_t last;
};

static int target_socket(int type, int port) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Move bytes from `from` into d, and from d to `to`; false when the pair is done or broken. */
static bool pump(int from, int to, struct relay_dir *d, bool readable, bool writable) {
  if (readable && !d->eof && d->len == 0) {
    ssize_t n = read(from, d->buf, sizeof d->buf);
    if (n > 0) {
      d->len = (size_t)n;
      d->off = 0;
    } else if (n == 0) d->eof = true;
    else if (errno != EAGAIN && errno != EINTR) return false;
  }
  if (writable && d->len > d->off) {
    ssize_t n = write(to, d->buf + d->off, d->len - d->off);
    if (n > 0) d->off += (size_t)n;
    else if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    if (d->off == d->len) d->len = d->off = 0;
  }
  if (d->eof && d->len == 0) shutdown(to, SHUT_WR);
  return true;
}

static _Noreturn void proxy_main(const struct spec *s, pid_t init) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)init);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  /* From here on, every socket this process creates is in the container's namespace; the
   * listeners, made before, stay on the host's. */
  if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) _exit(EXIT_SETUP);
  close(ns);
  struct conn *conns[MAX_CONNS] = { 0 };
  struct flow flows[MAX_FLOWS];
  for (int i = 0; i < MAX_FLOWS; i++) flows[i].fd = -1;
  struct pollfd *p = calloc(s->nports + 2 * MAX_CONNS + MAX_FLOWS, sizeof *p);
  if (p == NULL) _exit(EXIT_SETUP);
  for (;;) {
    size_t n = 0;
    for (size_t i = 0; i < s->nports; i++) p[n++] = (struct pollfd){ .fd = s->ports[i].fd, .events = POLLIN };
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = conns[i];
      if (c == NULL) {
        p[n++] = (struct pollfd){ .fd = -1 };
        p[n++] = (struct pollfd){ .fd = -1 };
        continue;
      }
      short ce = 0, te = 0;
      if (c->connecting) te = POLLOUT;
      else {
        if (!c->up.eof && c->up.len == 0) ce |= POLLIN;
        if (c->up.len > c->up.off) te |= POLLOUT;
        if (!c->down.eof && c->down.len == 0) te |= POLLIN;
        if (c->down.len > c->down.off) ce |= POLLOUT;
      }
      p[n++] = (struct pollfd){ .fd = c->client, .events = ce };
      p[n++] = (struct pollfd){ .fd = c->target, .events = te };
    }
    for (int i = 0; i < MAX_FLOWS; i++) p[n++] = (struct pollfd){ .fd = flows[i].fd, .events = POLLIN };
    if (poll(p, n, 1000) < 0 && errno != EINTR) _exit(EXIT_SETUP);
    time_t now = time(NULL);
    for (size_t i = 0; i < s->nports; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      const struct port *pt = &s->ports[i];
      if (!pt->udp) {
        int client = accept4(pt->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client < 0) continue;
        int slot = -1;
        for (int k = 0; k < MAX_CONNS && slot < 0; k++)
          if (conns[k] == NULL) slot = k;
        int target = slot < 0 ? -1 : target_socket(SOCK_STREAM, pt->container);
        struct conn *c = target < 0 ? NULL : calloc(1, sizeof *c);
        if (c == NULL) {
          if (target >= 0) close(target);
          close(client);
          continue;
        }
        c->client = client;
        c->target = target;
        c->connecting = true;
        conns[slot] = c;
        continue;
      }
      char buf[RELAY_BUF];
      struct sockaddr_in peer;
      socklen_t plen = sizeof peer;
      ssize_t got = recvfrom(pt->fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
      if (got < 0) continue;
      int f = -1, free_slot = -1;
      for (int k = 0; k < MAX_FLOWS; k++) {
        if (flows[k].fd < 0) {
          if (free_slot < 0) free_slot = k;
          continue;
        }
        if (flows[k].listener == pt->fd && flows[k].peer.sin_addr.s_addr == peer.sin_addr.s_addr && flows[k].peer.sin_port == peer.sin_port) f = k;
      }
      if (f < 0 && free_slot >= 0) {
        int fd = target_socket(SOCK_DGRAM, pt->container);
        if (fd >= 0) {
          flows[free_slot] = (struct flow){ .fd = fd, .listener = pt->fd, .peer = peer };
          f = free_slot;
        }
      }
      if (f < 0) continue; /* too many flows: the datagram is dropped, as UDP allows */
      flows[f].last = now;
      if (send(flows[f].fd, buf, (size_t)got, 0) < 0 && errno != EAGAIN) {
        close(flows[f].fd);
        flows[f].fd = -1;
      }
    }
    size_t base = s->nports;
    for (int i = 0; i < MAX_CONNS; i++) {
      struct conn *c = conns[i];
      struct pollfd *pc = &p[base + 2 * (size_t)i], *pt = &p[base + 2 * (size_t)i + 1];
      if (c == NULL) continue;
      bool ok = true;
      if (c->connecting) {
        if (pt->revents & (POLLOUT | POLLERR | POLLHUP)) {
          int err = 0;
          socklen_t el = sizeof err;
          if (getsockopt(c->target, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) ok = false;
          else c->connecting = false;
        }
      } else {
        bool cerr = pc->revents & (POLLERR | POLLNVAL), terr = pt->revents & (POLLERR | POLLNVAL);
        ok = !cerr && !terr;
        if (ok) ok = pump(c->client, c->target, &c->up, pc->revents & (POLLIN | POLLHUP), pt->revents & POLLOUT);
        if (ok) ok = pump(c->target, c->client, &c->down, pt->revents & (POLLIN | POLLHUP), pc->revents & POLLOUT);
        if (ok && c->up.eof && c->down.eof && c->up.len == 0 && c->down.len == 0) ok = false; /* both sides done */
      }
      if (!ok) {
        close(c->client);
        close(c->target);
        free(c);
        conns[i] = NULL;
      }
    }
    base += 2 * MAX_CONNS;
    for (int i = 0; i < MAX_FLOWS; i++) {
      struct flow *fl = &flows[i];
      if (fl->fd < 0) continue;
      if (p[base + (size_t)i].revents & POLLIN) {
        char buf[RELAY_BUF];
        ssize_t got = recv(fl->fd, buf, sizeof buf, 0);
        if (got >= 0) {
          sendto(fl->listener, buf, (size_t)got, 0, (struct sockaddr *)&fl->peer, sizeof fl->peer);
          fl->last = now;
        }
      }
      if (now - fl->last > UDP_IDLE_SECONDS) {
        close(fl->fd);
        fl->fd = -1;
      }
    }
  }
}

/* The proxy dies with the monitor (PDEATHSIG) or when the container ends (the monitor kills it). */
static pid_t start_proxy(const struct spec *s, pid_t init) {
  if (s->nports == 0) return 0;
  pid_t pid = fork();
  if (pid < 0) fail("fork the port proxy");
  if (pid == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) _exit(EXIT_SETUP);
    close(STATUS_FD);
    status_fd = -1;
    proxy_main(s, init);
  }
  for (size_t i = 0; i < s->nports; i++) close(s->ports[i].fd); /* the proxy has them */
  return pid;
}

/* --network private: outbound traffic goes through slirp4netns, a user-mode TCP/IP stack that
 * runs in the host's network namespace and hands the container a tap device (podman's rootless
 * design). Nothing is added to the host's firewall, routes or links, so a firewall reload changes
 * nothing and nothing is left behind; it ends when the monitor closes (or loses) its exit fd.
 * --disable-host-loopback keeps the host's 127.0.0.1 services out of reach, as a bridge does. */
static pid_t start_slirp(const struct spec *s, pid_t init, int *exit_w) {
  int ready[2], ex[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(ex, O_CLOEXEC) < 0) fail("pipe");
  pid_t pid = fork();
  if (pid < 0) fail("fork slirp4netns");
  if (pid == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) _exit(EXIT_SETUP);
    /* fds 3 and 4 for it, everything else of the monitor's closed at exec */
    int r = fcntl(ready[1], F_DUPFD, 10), e = fcntl(ex[0], F_DUPFD, 10);
    if (r < 0 || e < 0 || dup2(r, 3) < 0 || dup2(e, 4) < 0) _exit(EXIT_SETUP);
    cloexec_from(5);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) dup2(null, 1); /* its chatter stays out of the container's log; errors go to stderr */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Its sandbox pivots away from the host's mounts; in a mount namespace of its own that only
     * receives events, none of its unmounts can propagate back (a shared /run/netns would lose
     * its namespaces otherwise). */
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) {
      dprintf(2, "ferry-launch: a mount namespace for slirp4netns: %s\n", strerror(errno));
      _exit(EXIT_SETUP);
    }
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%d", (int)init);
    /* --enable-sandbox: all capabilities but NET_BIND_SERVICE dropped, an empty root. (Not its
     * --enable-seccomp: experimental, and it says so on stderr at every start.) */
    char *argv[] = { s->slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
                     "--ready-fd=3", "--exit-fd=4", pidtext, "tap0", NULL };
    execv(s->slirp, argv);
    dprintf(2, "ferry-launch: exec %s: %s\n", s->slirp, strerror(errno));
    _exit(EXIT_SETUP);
  }
  close(ready[1]);
  close(ex[0]);
  struct pollfd p = { .fd = ready[0], .events = POLLIN };
  int n;
  do n = poll(&p, 1, 10000); while (n < 0 && errno == EINTR);
  char byte = 0;
  if (n <= 0 || read(ready[0], &byte, 1) != 1 || byte != '1') {
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    failx("start the container's outbound network (%s): %s", s->slirp,
          n == 0 ? "not ready after 10 s" : WIFEXITED(status) ? "it exited early (see its message above)" : "it was killed");
  }
  close(ready[0]);
  *exit_w = ex[1];
  return pid;
}

/* The container's cgroups once it has ended; the kernel may take a moment to reap the last of
 * its processes (EBUSY until then). ferry removes what is left at `rm`. */
static void remove_cgroups(const struct spec *s) {
  for (size_t i = 0; i < s->ncgroups; i++) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", s->cgroups[i]);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) continue;
    *slash = '\0';
    for (int tries = 0; tries < 1000 && rmdir(dir) < 0 && errno == EBUSY; tries++) usleep(1000);
  }
}

static unsigned long long process_start_time(pid_t pid);

/* --network container:NAME: the handle is taken, then the pid is checked not to be reused. */
static void open_shared_netns(struct spec *s) {
  s->netns_fd = -1;
  if (s->netpid == 0) return;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)s->netpid);
  s->netns_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (s->netns_fd < 0 || (s->netpid_start != 0 && process_start_time(s->netpid) != s->netpid_start))
    failx("the container whose network this one shares is not running");
}

static int run_main(struct spec *s) {
  int deathsig = SIGRTMIN;
  die_with_parent(s, deathsig);
  int sp[2] = { -1, -1 };
  if (s->tty && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) fail("socketpair");
  const size_t stack_size = 1 << 20;
  char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) fail("mmap");
  open_ports(s); /* a port in use fails the start before anything is made */
  apply_cgroup_plan(s);
  open_cgroups(s);
  open_shared_netns(s);
  struct init_args a = { .spec = s, .ttysock = sp[1], .go = { -1, -1 } };
  bool slirp = s->slirp != NULL && s->netnone && s->netpid == 0;
  if (slirp && pipe2(a.go, O_CLOEXEC) < 0) fail("pipe");
  int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | (s->netnone && s->netpid == 0 ? CLONE_NEWNET : 0);
  pid_t init = clone(init_main, stack + stack_size, flags | SIGCHLD, &a);
  if (init < 0) fail("create the container's namespaces");
  status_line("pid %d", (int)init);
  pid_t slirp_pid = 0;
  int slirp_exit = -1;
  if (slirp) {
    close(a.go[0]);
    slirp_pid = start_slirp(s, init, &slirp_exit);
    if (write(a.go[1], "1", 1) != 1) fail("start the container");
    close(a.go[1]);
  }
  int master = -1;
  if (s->tty) {
    close(sp[1]);
    master = recv_fd(sp[0]); /* -1 when init failed before making the pty */
    close(sp[0]);
  }
  /* After the pty handover: the proxy must not hold the socket init's failure closes. */
  pid_t proxy = start_proxy(s, init);
  close(STATUS_FD);
  status_fd = -1;
  for (size_t i = 0; i < s->ncgroups; i++) close(s->cgroup_fds[i]);
  int code = supervise(init, master, s->interactive, deathsig);
  if (proxy > 0) {
    kill(proxy, SIGKILL);
    waitpid(proxy, NULL, 0);
  }
  if (slirp_pid > 0) {
    close(slirp_exit); /* its exit fd: it ends now */
    waitpid(slirp_pid, NULL, 0);
  }
  bool oom = oom_killed(s->oomfile);
  remove_cgroups(s);
  if (oom) dprintf(2, "ferry: the container was killed by the kernel's OOM killer (memory limit reached)\n");
  if (s->exitfile != NULL) write_exit_file(s->exitfile, code, oom);
  return code;
}

static unsigned long long process_start_time(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (p == NULL) return 0;
  unsigned long long start = 0;
  /* Fields after the name start at 3 (state); the start time is field 22. */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &start) != 1) return 0;
  return start;
}

static int exec_main(struct spec *s) {
  int deathsig = SIGRTMIN;
  die_with_parent(s, deathsig);
  if (s->target <= 0) failx("spec: no target container");
  /* mnt last: once in the container's mount namespace, /proc is the container's. */
  static const char *kinds[] = { "ipc", "uts", "net", "pid", "mnt" };
  int fds[5];
  for (int i = 0; i < 5; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)s->target, kinds[i]);
    fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (fds[i] < 0) fail_code(EXIT_SETUP, 0, "the container is not running (no process %d)", (int)s->target);
  }
  open_cgroups(s);
  /* The handles are taken: if the pid was reused meanwhile, they belong to someone else. */
  if (s->target_start != 0 && process_start_time(s->target) != s->target_start)
    failx("the container is not running (process %d is another process now)", (int)s->target);
  for (int i = 0; i < 5; i++) {
    if (setns(fds[i], 0) < 0) fail("join the container's %s namespace", kinds[i]);
    close(fds[i]);
  }
  /* setns(mnt) put our root and cwd at the container's root. */
  int master = -1, slave = -1;
  if (s->tty) open_pty(&master, &slave);
  pid_t child = fork(); /* the child is in the container's PID namespace */
  if (child < 0) fail("fork");
  if (child == 0) {
    if (master >= 0) close(master);
    join_cgroups(s);
    start_command(s, slave);
  }
  for (size_t i = 0; i < s->ncgroups; i++) close(s->cgroup_fds[i]);
  status_line("pid %d", (int)child);
  if (slave >= 0) close(slave);
  close(STATUS_FD);
  status_fd = -1;
  return supervise(child, master, s->interactive, deathsig);
}

int main(int argc, char **argv) {
  if (argc != 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "exec") != 0)) {
    dprintf(2, "usage: ferry-launch run|exec   (spec on fd 3; started by ferry, not by hand)\n");
    return 2;
  }
  if (fcntl(STATUS_FD, F_GETFD) < 0) {
    dprintf(2, "ferry-launch: fd 3 (spec and status) is not open\n");
    return 2;
  }
  run_from_sealed_copy(argv);
  /* Not dumpable: other processes cannot open /proc/PID/{exe,fd,mem} of the launcher. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) fail("prctl DUMPABLE");
  /* All signals wait for the signalfd (monitor) or sigwaitinfo (init): none is lost at start. */
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL);
  struct spec s;
  memset(&s, 0, sizeof s);
  read_spec(&s);
  return strcmp(argv[1], "run") == 0 ? run_main(&s) : exec_main(&s);
}
