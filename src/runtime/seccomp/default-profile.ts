import type { SeccompArg, SeccompProfile, SeccompSyscall } from './profile.js';

/**
 * ferry's default seccomp profile: the effect of docker's (moby profiles/seccomp/default.json) on
 * x86_64 and aarch64. Refused with EPERM unless allowed: keyctl/add_key/request_key, bpf,
 * perf_event_open, kexec_*, *_module, mount and friends, unshare/setns, open_by_handle_at,
 * userfaultfd, ... Capabilities docker's default set lacks bring back the calls they guard.
 * Only names that exist on x86_64 or aarch64 are listed (docker's list also covers i386, arm,
 * ppc64le, s390x, ...); the test checks every name here resolves on one of them.
 */

const EPERM = 1;
const ENOSYS = 38;

/** Allowed for every container. */
const ALLOWED: readonly string[] = [
  'accept', 'accept4', 'access', 'adjtimex', 'alarm', 'bind', 'brk', 'capget',
  'capset', 'chdir', 'chmod', 'chown', 'clock_adjtime', 'clock_getres', 'clock_gettime', 'clock_nanosleep',
  'close', 'close_range', 'connect', 'copy_file_range', 'creat', 'dup', 'dup2', 'dup3',
  'epoll_create', 'epoll_create1', 'epoll_ctl', 'epoll_ctl_old', 'epoll_pwait', 'epoll_pwait2', 'epoll_wait', 'epoll_wait_old',
  'eventfd', 'eventfd2', 'execve', 'execveat', 'exit', 'exit_group', 'faccessat', 'faccessat2',
  'fadvise64', 'fallocate', 'fanotify_mark', 'fchdir', 'fchmod', 'fchmodat', 'fchown', 'fchownat',
  'fcntl', 'fdatasync', 'fgetxattr', 'flistxattr', 'flock', 'fork', 'fremovexattr', 'fsetxattr',
  'fstat', 'fstatfs', 'fsync', 'ftruncate', 'futex', 'futex_waitv', 'futimesat', 'get_robust_list',
  'get_thread_area', 'getcpu', 'getcwd', 'getdents', 'getdents64', 'getegid', 'geteuid', 'getgid',
  'getgroups', 'getitimer', 'getpeername', 'getpgid', 'getpgrp', 'getpid', 'getppid', 'getpriority',
  'getrandom', 'getresgid', 'getresuid', 'getrlimit', 'getrusage', 'getsid', 'getsockname', 'getsockopt',
  'gettid', 'gettimeofday', 'getuid', 'getxattr', 'inotify_add_watch', 'inotify_init', 'inotify_init1', 'inotify_rm_watch',
  'io_cancel', 'io_destroy', 'io_getevents', 'io_pgetevents', 'io_setup', 'io_submit', 'io_uring_enter', 'io_uring_register',
  'io_uring_setup', 'ioctl', 'ioprio_get', 'ioprio_set', 'kill', 'landlock_add_rule', 'landlock_create_ruleset', 'landlock_restrict_self',
  'lchown', 'lgetxattr', 'link', 'linkat', 'listen', 'listxattr', 'llistxattr', 'lremovexattr',
  'lseek', 'lsetxattr', 'lstat', 'madvise', 'membarrier', 'memfd_create', 'memfd_secret', 'mincore',
  'mkdir', 'mkdirat', 'mknod', 'mknodat', 'mlock', 'mlock2', 'mlockall', 'mmap',
  'mprotect', 'mq_getsetattr', 'mq_notify', 'mq_open', 'mq_timedreceive', 'mq_timedsend', 'mq_unlink', 'mremap',
  'msgctl', 'msgget', 'msgrcv', 'msgsnd', 'msync', 'munlock', 'munlockall', 'munmap',
  'name_to_handle_at', 'nanosleep', 'newfstatat', 'open', 'openat', 'openat2', 'pause', 'pidfd_open',
  'pidfd_send_signal', 'pipe', 'pipe2', 'pkey_alloc', 'pkey_free', 'pkey_mprotect', 'poll', 'ppoll',
  'prctl', 'pread64', 'preadv', 'preadv2', 'prlimit64', 'process_mrelease', 'pselect6', 'pwrite64',
  'pwritev', 'pwritev2', 'read', 'readahead', 'readlink', 'readlinkat', 'readv', 'recvfrom',
  'recvmmsg', 'recvmsg', 'remap_file_pages', 'removexattr', 'rename', 'renameat', 'renameat2', 'restart_syscall',
  'rmdir', 'rseq', 'rt_sigaction', 'rt_sigpending', 'rt_sigprocmask', 'rt_sigqueueinfo', 'rt_sigreturn', 'rt_sigsuspend',
  'rt_sigtimedwait', 'rt_tgsigqueueinfo', 'sched_get_priority_max', 'sched_get_priority_min', 'sched_getaffinity', 'sched_getattr', 'sched_getparam', 'sched_getscheduler',
  'sched_rr_get_interval', 'sched_setaffinity', 'sched_setattr', 'sched_setparam', 'sched_setscheduler', 'sched_yield', 'seccomp', 'select',
  'semctl', 'semget', 'semop', 'semtimedop', 'sendfile', 'sendmmsg', 'sendmsg', 'sendto',
  'set_robust_list', 'set_thread_area', 'set_tid_address', 'setfsgid', 'setfsuid', 'setgid', 'setgroups', 'setitimer',
  'setpgid', 'setpriority', 'setregid', 'setresgid', 'setresuid', 'setreuid', 'setrlimit', 'setsid',
  'setsockopt', 'setuid', 'setxattr', 'shmat', 'shmctl', 'shmdt', 'shmget', 'shutdown',
  'sigaltstack', 'signalfd', 'signalfd4', 'socketpair', 'splice', 'stat', 'statfs', 'statx',
  'symlink', 'symlinkat', 'sync', 'sync_file_range', 'syncfs', 'sysinfo', 'tee', 'tgkill',
  'time', 'timer_create', 'timer_delete', 'timer_getoverrun', 'timer_gettime', 'timer_settime', 'timerfd_create', 'timerfd_gettime',
  'timerfd_settime', 'times', 'tkill', 'truncate', 'umask', 'uname', 'unlink', 'unlinkat',
  'utime', 'utimensat', 'utimes', 'vfork', 'vmsplice', 'wait4', 'waitid', 'write',
  'writev',
];

/**
 * personality(2) values docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
 * 0xffffffff (query). Others (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) would weaken ASLR or NX.
 */
const PERSONALITIES: readonly bigint[] = [0x0n, 0x8n, 0x20000n, 0x20008n, 0xffffffffn];

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: clone may make none of them. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000n;

/** AF_VSOCK: sockets to the hypervisor or its other guests are refused, as docker does. */
const AF_VSOCK = 40n;

/** What each capability brings back, as docker grants it (a call listed twice needs either). */
const CAPABILITY_GRANTS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['CAP_DAC_READ_SEARCH', ['open_by_handle_at']],
  ['CAP_SYS_ADMIN', [
    'bpf', 'clone', 'clone3', 'fanotify_init', 'fsconfig', 'fsmount', 'fsopen', 'fspick', 'lookup_dcookie', 'mount',
    'mount_setattr', 'move_mount', 'open_tree', 'perf_event_open', 'quotactl', 'quotactl_fd', 'setdomainname',
    'sethostname', 'setns', 'syslog', 'umount2', 'unshare',
  ]],
  ['CAP_SYS_BOOT', ['reboot']],
  ['CAP_SYS_CHROOT', ['chroot']],
  ['CAP_SYS_MODULE', ['delete_module', 'init_module', 'finit_module']],
  ['CAP_SYS_PACCT', ['acct']],
  ['CAP_SYS_PTRACE', ['kcmp', 'pidfd_getfd', 'process_madvise', 'process_vm_readv', 'process_vm_writev', 'ptrace']],
  ['CAP_SYS_RAWIO', ['iopl', 'ioperm']],
  ['CAP_SYS_TIME', ['settimeofday', 'clock_settime']],
  ['CAP_SYS_TTY_CONFIG', ['vhangup']],
  ['CAP_SYS_NICE', ['get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node']],
  ['CAP_SYSLOG', ['syslog']],
  ['CAP_BPF', ['bpf']],
  ['CAP_PERFMON', ['perf_event_open']],
];

const allow = (names: readonly string[], more: Partial<SeccompSyscall> = {}): SeccompSyscall => ({ names, action: 'SCMP_ACT_ALLOW', ...more });
const arg0 = (op: SeccompArg['op'], value: bigint): SeccompArg => ({ index: 0, value, op });

const DEFAULT_PROFILE: SeccompProfile = {
  defaultAction: 'SCMP_ACT_ERRNO',
  defaultErrnoRet: EPERM,
  archMap: [
    { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'] },
    { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
  ],
  syscalls: [
    allow(ALLOWED),
    // Before 4.8 ptrace could bypass seccomp.
    allow(['process_vm_readv', 'process_vm_writev', 'ptrace'], { includes: { minKernel: '4.8' } }),
    // docker allows socket when arg0 != AF_VSOCK over all 64 bits, but the kernel reads an int:
    // 40 | 1 << 32 would pass as AF_VSOCK. So refuse on the low half first, then allow the rest
    // (ferry's rules decide in order).
    { names: ['socket'], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM, args: [{ index: 0, value: 0xffffffffn, valueTwo: AF_VSOCK, op: 'SCMP_CMP_MASKED_EQ' }] },
    allow(['socket']),
    ...PERSONALITIES.map((p) => allow(['personality'], { args: [arg0('SCMP_CMP_EQ', p)] })),
    allow(['arch_prctl', 'modify_ldt'], { includes: { arches: ['amd64'] } }),
    ...CAPABILITY_GRANTS.map(([cap, names]) => allow(names, { includes: { caps: [cap] } })),
    // Without CAP_SYS_ADMIN: threads and fork, but no new namespaces.
    allow(['clone'], { args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0n, op: 'SCMP_CMP_MASKED_EQ' }], excludes: { caps: ['CAP_SYS_ADMIN'] } }),
    // clone3's flags sit behind a pointer, out of seccomp's reach: ENOSYS makes libc fall back to clone.
    { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS, excludes: { caps: ['CAP_SYS_ADMIN'] } },
  ],
  source: "(ferry's default)",
};

/** ferry's default profile (docker's, in effect). */
export function defaultSeccompProfile(): SeccompProfile {
  return DEFAULT_PROFILE;
}
