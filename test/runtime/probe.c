/*
 * A static probe the security tests put into images (built with `cc -static` by the test):
 * each subcommand makes one system call a container must not be able to make, and prints
 * "ok" or the errno name, so a test reads what the kernel (and the seccomp filter) said.
 *
 *   probe keyring-find NAME   search the session keyring for a "user" key NAME
 *   probe keyring-id          the session keyring's serial
 *   probe add-key             add a key to the session keyring
 *   probe unshare-user        unshare(CLONE_NEWUSER)
 *   probe clone-user          clone(CLONE_NEWUSER)
 *   probe bpf                 bpf(BPF_MAP_CREATE) with a bad attribute
 *   probe perf                perf_event_open
 *   probe mount               mount a tmpfs on /mnt
 *   probe open-rw PATH        open a file (a device node) for reading and writing
 *   probe udp-echo PORT       answer one UDP datagram on PORT with "echo: " and its bytes
 *   probe host-key NAME VALUE -- CMD...   (on the host) join a new session keyring, add the key,
 *                             exec CMD: the key is then in the session keyring ferry inherits
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(long r) {
  if (r < 0) {
    printf("%s\n", strerrorname_np(errno));
    return 1;
  }
  printf("ok\n");
  return 0;
}

static int child_fn(void *arg) {
  (void)arg;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *cmd = argv[1];
  if (!strcmp(cmd, "keyring-find") && argc == 3)
    return report(syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, "user", argv[2], 0));
  if (!strcmp(cmd, "keyring-id")) {
    long id = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    if (id < 0) return report(id);
    printf("%ld\n", id);
    return 0;
  }
  if (!strcmp(cmd, "add-key"))
    return report(syscall(SYS_add_key, "user", "probe", "x", 1, KEY_SPEC_SESSION_KEYRING));
  if (!strcmp(cmd, "unshare-user")) return report(unshare(CLONE_NEWUSER));
  if (!strcmp(cmd, "clone-user")) {
    static char stack[65536];
    long pid = clone(child_fn, stack + sizeof stack, CLONE_NEWUSER | SIGCHLD, NULL);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return report(pid);
  }
  if (!strcmp(cmd, "bpf")) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 0; /* invalid: EINVAL when the call is allowed at all */
    return report(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  }
  if (!strcmp(cmd, "perf")) {
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    return report(syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
  }
  if (!strcmp(cmd, "mount")) return report(mount("tmpfs", "/mnt", "tmpfs", 0, NULL));
  if (!strcmp(cmd, "open-rw") && argc == 3) return report(open(argv[2], O_RDWR));
  if (!strcmp(cmd, "udp-echo") && argc == 3) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return report(-1);
    for (;;) {
      char buf[512], out[600];
      struct sockaddr_in peer;
      socklen_t plen = sizeof peer;
      ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &plen);
      if (n < 0) return report(-1);
      int m = snprintf(out, sizeof out, "echo: %.*s", (int)n, buf);
      sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&peer, plen);
    }
  }
  if (!strcmp(cmd, "host-key") && argc >= 6 && !strcmp(argv[4], "--")) {
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0) return report(-1);
    if (syscall(SYS_add_key, "user", argv[2], argv[3], strlen(argv[3]), KEY_SPEC_SESSION_KEYRING) < 0) return report(-1);
    execvp(argv[5], argv + 5);
    return report(-1);
  }
  fprintf(stderr, "probe: unknown command %s\n", cmd);
  return 2;
}
