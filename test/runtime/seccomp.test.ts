import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { DEFAULT_CAPABILITIES } from '../../src/runtime/capabilities.js';
import {
  BPF_MAXINSNS, compileSeccomp, currentSeccompArch, defaultSeccompProfile, defaultSeccompProgram, parseSeccompProfile,
  syscallNumber, syscallTable, type SeccompArch, type SeccompProfile,
} from '../../src/runtime/seccomp/index.js';
import { PRECOMPILED_DEFAULT } from '../../src/runtime/seccomp/precompiled.js';

/**
 * The seccomp compiler, checked by running its programs: a small classic-BPF interpreter below
 * executes them on seccomp_data records, after the checks the kernel makes when loading one. At
 * the end the default program is installed for real (python3's ctypes, no native code of ours).
 */

const AUDIT: Record<SeccompArch, number> = { x86_64: 0xc000003e, aarch64: 0xc00000b7 };
const AUDIT_I386 = 0x40000003;
const AUDIT_ARM = 0x40000028;
const AUDIT_PPC64LE = 0xc0000015;

interface SeccompData {
  nr: number;
  arch: number;
  args?: readonly bigint[];
}

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function decode(program: Buffer): Insn[] {
  const out: Insn[] = [];
  for (let o = 0; o < program.length; o += 8) {
    out.push({ code: program.readUInt16LE(o), jt: program.readUInt8(o + 2), jf: program.readUInt8(o + 3), k: program.readUInt32LE(o + 4) });
  }
  return out;
}

const LD_W_ABS = 0x20;
const ALU_AND_K = 0x54;
const JA = 0x05;
const JEQ = 0x15;
const JGT = 0x25;
const JGE = 0x35;
const JSET = 0x45;
const RET_K = 0x06;
const ST = 0x02;
const LDX_MEM = 0x61;
const LD_MEM = 0x60;

/** What the kernel's loader checks (bpf_check_classic, seccomp_check_filter), for what we emit. */
function checkProgram(program: Buffer): Insn[] {
  expect(program.length % 8).toBe(0);
  const insns = decode(program);
  expect(insns.length).toBeGreaterThan(0);
  expect(insns.length).toBeLessThanOrEqual(BPF_MAXINSNS);
  insns.forEach((i, pc) => {
    switch (i.code) {
      case LD_W_ABS:
        expect(i.k % 4, `pc ${pc}: aligned load`).toBe(0);
        expect(i.k, `pc ${pc}: load within seccomp_data`).toBeLessThan(64);
        break;
      case JA:
        expect(pc + 1 + i.k, `pc ${pc}: ja within the program`).toBeLessThan(insns.length);
        break;
      case JEQ: case JGT: case JGE: case JSET:
        expect(pc + 1 + Math.max(i.jt, i.jf), `pc ${pc}: jump within the program`).toBeLessThan(insns.length);
        break;
      case ALU_AND_K: case RET_K: case ST: case LD_MEM: case LDX_MEM:
        break;
      default:
        throw new Error(`pc ${pc}: opcode 0x${i.code.toString(16)} not expected`);
    }
  });
  expect(insns.at(-1)?.code, 'the last instruction returns').toBe(RET_K);
  return insns;
}

/** Runs a program on one syscall; returns the filter's SECCOMP_RET_* value. */
const checked = new WeakMap<Buffer, Insn[]>();

function run(program: Buffer, data: SeccompData): number {
  const insns = checked.get(program) ?? checkProgram(program);
  checked.set(program, insns);
  const record = Buffer.alloc(64);
  record.writeUInt32LE(data.nr >>> 0, 0);
  record.writeUInt32LE(data.arch >>> 0, 4);
  (data.args ?? []).forEach((a, i) => record.writeBigUInt64LE(BigInt.asUintN(64, a), 16 + 8 * i));
  const mem = new Array<number>(16).fill(0);
  let acc = 0;
  for (let pc = 0, steps = 0; steps < 100_000; steps++) {
    const i = insns[pc];
    if (i === undefined) throw new Error(`pc ${pc}: ran off the program`);
    switch (i.code) {
      case LD_W_ABS: acc = record.readUInt32LE(i.k); pc++; break;
      case ALU_AND_K: acc = (acc & i.k) >>> 0; pc++; break;
      case ST: mem[i.k] = acc; pc++; break;
      case LD_MEM: acc = mem[i.k] ?? 0; pc++; break;
      case JA: pc += 1 + i.k; break;
      case JEQ: pc += 1 + (acc === i.k ? i.jt : i.jf); break;
      case JGT: pc += 1 + (acc > i.k ? i.jt : i.jf); break;
      case JGE: pc += 1 + (acc >= i.k ? i.jt : i.jf); break;
      case JSET: pc += 1 + ((acc & i.k) !== 0 ? i.jt : i.jf); break;
      case RET_K: return i.k;
      default: throw new Error(`pc ${pc}: opcode 0x${i.code.toString(16)} not interpreted`);
    }
  }
  throw new Error('no return after 100000 steps');
}

/** SECCOMP_RET_* as text, for readable expectations. */
function describeRet(ret: number): string {
  const action = (ret & 0xffff0000) >>> 0;
  const data = ret & 0xffff;
  if (ret === 0x80000000) return 'KILL_PROCESS';
  if (action === 0) return 'KILL_THREAD';
  if (action === 0x7fff0000) return 'ALLOW';
  if (action === 0x7ffc0000) return 'LOG';
  if (action === 0x00030000) return 'TRAP';
  if (action === 0x00050000) return data === 1 ? 'EPERM' : data === 38 ? 'ENOSYS' : `ERRNO(${data})`;
  if (action === 0x7ff00000) return `TRACE(${data})`;
  return `0x${ret.toString(16)}`;
}

function nr(arch: SeccompArch, name: string): number {
  const n = syscallNumber(arch, name);
  if (n === undefined) throw new Error(`no ${name} on ${arch}`);
  return n;
}

const call = (program: Buffer, arch: SeccompArch, name: string, ...args: bigint[]): string =>
  describeRet(run(program, { nr: nr(arch, name), arch: AUDIT[arch], args }));

const DOCKER_CAPS: ReadonlySet<string> = new Set(DEFAULT_CAPABILITIES);
const withCaps = (...caps: string[]): ReadonlySet<string> => new Set([...DEFAULT_CAPABILITIES, ...caps]);

const CLONE_NEWNS = 0x20000n;
const CLONE_NEWUSER = 0x10000000n;
const CLONE_NEWNET = 0x40000000n;
const SIGCHLD = 17n;
// What glibc's pthread_create passes: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID.
const THREAD_FLAGS = 0x3d0f00n;

describe('syscall tables', () => {
  it('know the numbers the filter depends on', () => {
    expect([nr('x86_64', 'read'), nr('x86_64', 'execve'), nr('x86_64', 'clone'), nr('x86_64', 'clone3'), nr('x86_64', 'keyctl')]).toEqual([0, 59, 56, 435, 250]);
    expect([nr('aarch64', 'read'), nr('aarch64', 'execve'), nr('aarch64', 'clone'), nr('aarch64', 'openat'), nr('aarch64', 'keyctl')]).toEqual([63, 221, 220, 56, 219]);
    expect(syscallNumber('aarch64', 'open')).toBeUndefined(); // arm64 has only openat
    expect(syscallNumber('x86_64', 'constructor')).toBeUndefined();
  });

  it('every name in the default profile is a syscall of x86_64 or aarch64 (a typo would silently refuse it)', () => {
    const known = new Set([...syscallTable('x86_64').keys(), ...syscallTable('aarch64').keys()]);
    const names = defaultSeccompProfile().syscalls.flatMap((s) => s.names);
    expect(names.filter((n) => !known.has(n))).toEqual([]);
  });
});

describe.each(['x86_64', 'aarch64'] as const)('the default profile on %s', (arch) => {
  const program = defaultSeccompProgram(arch, DOCKER_CAPS);
  const admin = defaultSeccompProgram(arch, withCaps('CAP_SYS_ADMIN'));

  it('the precompiled program run uses is exactly what the compiler makes (stale: node scripts/seccomp-precompile.js)', () => {
    expect(Buffer.from(PRECOMPILED_DEFAULT[arch], 'base64').equals(defaultSeccompProgram(arch, new Set(DEFAULT_CAPABILITIES)))).toBe(true);
  });

  it('fits the kernel and starts by checking the architecture', () => {
    const insns = checkProgram(program);
    expect(insns[0]).toEqual({ code: LD_W_ABS, jt: 0, jf: 0, k: 4 });
    expect(insns.length).toBeLessThan(400);
  });

  it('allows what programs and the launcher do after installing it', () => {
    const names = ['read', 'write', 'openat', 'close', 'mmap', 'execve', 'execveat', 'exit_group', 'rt_sigaction', 'rt_sigprocmask',
      'setresuid', 'setresgid', 'setgroups', 'capset', 'prctl', 'close_range', 'fcntl', 'wait4', 'kill', 'futex', 'getpid', 'seccomp'];
    for (const name of names) expect(call(program, arch, name), name).toBe('ALLOW');
    if (arch === 'x86_64') expect(call(program, arch, 'arch_prctl')).toBe('ALLOW');
    expect(call(program, arch, 'ptrace'), 'ptrace: allowed on 4.8 and later').toBe('ALLOW');
  });

  it('allows clone for fork and threads, refuses it for namespaces', () => {
    expect(call(program, arch, 'clone', SIGCHLD)).toBe('ALLOW');
    expect(call(program, arch, 'clone', THREAD_FLAGS)).toBe('ALLOW');
    expect(call(program, arch, 'clone', CLONE_NEWUSER | SIGCHLD)).toBe('EPERM');
    expect(call(program, arch, 'clone', CLONE_NEWNET)).toBe('EPERM');
    expect(call(program, arch, 'clone', CLONE_NEWNS | THREAD_FLAGS)).toBe('EPERM');
    expect(call(admin, arch, 'clone', CLONE_NEWUSER | SIGCHLD)).toBe('ALLOW');
  });

  it('clone3 gets ENOSYS (so libc falls back to clone) unless CAP_SYS_ADMIN', () => {
    expect(call(program, arch, 'clone3')).toBe('ENOSYS');
    expect(call(admin, arch, 'clone3')).toBe('ALLOW');
  });

  it('refuses keyrings, bpf, perf, kexec, modules, handles, mounts and namespaces with EPERM', () => {
    const refused = ['keyctl', 'add_key', 'request_key', 'bpf', 'perf_event_open', 'kexec_load', 'kexec_file_load', 'open_by_handle_at',
      'mount', 'umount2', 'setns', 'init_module', 'finit_module', 'delete_module', 'reboot', 'swapon', 'pivot_root', 'userfaultfd',
      'fsopen', 'move_mount', 'open_tree', 'sethostname', 'settimeofday', 'clock_settime', 'acct'];
    for (const name of refused) expect(call(program, arch, name), name).toBe('EPERM');
    expect(call(program, arch, 'unshare', CLONE_NEWUSER)).toBe('EPERM');
    expect(call(program, arch, 'unshare', CLONE_NEWNS)).toBe('EPERM');
    // docker's default set has CAP_SYS_CHROOT; without it chroot is refused too.
    expect(call(program, arch, 'chroot')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, new Set()), arch, 'chroot')).toBe('EPERM');
  });

  it('each capability brings back the calls it guards', () => {
    for (const name of ['mount', 'umount2', 'setns', 'bpf', 'perf_event_open', 'sethostname', 'fsopen']) expect(call(admin, arch, name), name).toBe('ALLOW');
    expect(call(admin, arch, 'unshare', CLONE_NEWUSER)).toBe('ALLOW');
    expect(call(admin, arch, 'keyctl'), 'no capability brings back keyctl').toBe('EPERM');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_BPF')), arch, 'bpf')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_BPF')), arch, 'mount')).toBe('EPERM');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_PERFMON')), arch, 'perf_event_open')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_SYS_MODULE')), arch, 'finit_module')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_SYS_TIME')), arch, 'clock_settime')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_SYS_BOOT')), arch, 'reboot')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_DAC_READ_SEARCH')), arch, 'open_by_handle_at')).toBe('ALLOW');
    expect(call(defaultSeccompProgram(arch, withCaps('CAP_SYS_PTRACE')), arch, 'kcmp')).toBe('ALLOW');
    expect(call(program, arch, 'kcmp')).toBe('EPERM');
  });

  it('personality: only the values docker allows, compared on all 64 bits', () => {
    for (const p of [0n, 0x8n, 0x20000n, 0x20008n, 0xffffffffn]) expect(call(program, arch, 'personality', p), `0x${p.toString(16)}`).toBe('ALLOW');
    for (const p of [0x1n, 0x3n, 0x9n, 0x0040000n /* ADDR_NO_RANDOMIZE */, 0x0400000n /* READ_IMPLIES_EXEC */, 1n << 32n, (1n << 32n) | 8n]) {
      expect(call(program, arch, 'personality', p), `0x${p.toString(16)}`).toBe('EPERM');
    }
  });

  it('socket: AF_VSOCK refused, even with the upper half of the register set; AF_INET and AF_UNIX allowed', () => {
    expect(call(program, arch, 'socket', 40n)).toBe('EPERM');
    expect(call(program, arch, 'socket', 40n | (1n << 32n)), 'the kernel reads an int: this is AF_VSOCK').toBe('EPERM');
    expect(call(program, arch, 'socket', 2n, 1n)).toBe('ALLOW');
    expect(call(program, arch, 'socket', 1n)).toBe('ALLOW');
    expect(call(program, arch, 'socket', 10n)).toBe('ALLOW');
  });

  it('another architecture: its compat ABI gets EPERM, a foreign one is killed', () => {
    const compat = arch === 'x86_64' ? AUDIT_I386 : AUDIT_ARM;
    const foreign = arch === 'x86_64' ? AUDIT.aarch64 : AUDIT.x86_64;
    for (const n of [0, 1, 11, 120, 0x40000000]) {
      expect(describeRet(run(program, { nr: n, arch: compat }))).toBe('EPERM');
      expect(describeRet(run(program, { nr: n, arch: foreign }))).toBe('KILL_PROCESS');
      expect(describeRet(run(program, { nr: n, arch: AUDIT_PPC64LE }))).toBe('KILL_PROCESS');
    }
  });

  it('syscalls newer than the table get ENOSYS, unused numbers below it EPERM', () => {
    const last = Math.max(...syscallTable(arch).values());
    for (const n of [last + 1, last + 2 /* fchmodat2 */, 1000, 0x3fffffff]) expect(describeRet(run(program, { nr: n, arch: AUDIT[arch] })), String(n)).toBe('ENOSYS');
    if (arch === 'x86_64') expect(describeRet(run(program, { nr: 400, arch: AUDIT[arch] }))).toBe('EPERM');
    else expect(describeRet(run(program, { nr: 0xffffffff, arch: AUDIT[arch] }))).toBe('ENOSYS');
  });
});

describe('x32', () => {
  it('x32 numbers (bit 30) are refused with the default errno on x86_64, even for allowed calls', () => {
    const program = defaultSeccompProgram('x86_64', DOCKER_CAPS);
    for (const name of ['read', 'getpid', 'execve']) {
      expect(describeRet(run(program, { nr: 0x40000000 + nr('x86_64', name), arch: AUDIT.x86_64 })), name).toBe('EPERM');
    }
    expect(describeRet(run(program, { nr: 0x40000000 + 512, arch: AUDIT.x86_64 }))).toBe('EPERM');
    expect(describeRet(run(program, { nr: 0xffffffff, arch: AUDIT.x86_64 }))).toBe('EPERM');
  });

  it('an allow-by-default profile still refuses x32 and compat calls (no bypass around its denials)', () => {
    const profile = parseSeccompProfile(JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] }), 'p.json');
    const program = compileSeccomp(profile, { arch: 'x86_64', capabilities: DOCKER_CAPS });
    expect(call(program, 'x86_64', 'mkdir')).toBe('EPERM');
    expect(call(program, 'x86_64', 'rmdir')).toBe('ALLOW');
    expect(describeRet(run(program, { nr: 0x40000000 + nr('x86_64', 'mkdir'), arch: AUDIT.x86_64 }))).toBe('EPERM');
    expect(describeRet(run(program, { nr: 39, arch: AUDIT_I386 })), 'i386 not listed: foreign').toBe('KILL_PROCESS');
    expect(describeRet(run(program, { nr: 2000, arch: AUDIT.x86_64 })), 'the default, past the table').toBe('ALLOW');
  });
});

const HAND_WRITTEN = `{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 13,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
  "syscalls": [
    { "names": ["read", "write", "exit_group", "s390_runtime_instr"], "action": "SCMP_ACT_ALLOW" },
    { "name": "getpid", "action": "SCMP_ACT_LOG", "comment": "the legacy single name" },
    { "names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [{ "index": 1, "value": 15, "op": "SCMP_CMP_LE" }, { "index": 0, "value": 1, "op": "SCMP_CMP_GT" }] },
    { "names": ["lseek"], "action": "SCMP_ACT_ALLOW", "args": [{ "index": 2, "value": 0, "op": "SCMP_CMP_EQ" }, { "index": 2, "value": 2, "op": "SCMP_CMP_EQ" }] },
    { "names": ["mmap"], "action": "SCMP_ACT_ALLOW", "args": [{ "index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] },
    { "names": ["mmap"], "action": "SCMP_ACT_KILL_PROCESS" },
    { "names": ["umask"], "action": "SCMP_ACT_ALLOW", "includes": { "caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"] } },
    { "names": ["fchdir"], "action": "SCMP_ACT_ALLOW", "excludes": { "arches": ["arm64"] } },
    { "names": ["chdir"], "action": "SCMP_ACT_ALLOW", "includes": { "minKernel": "5.10" } },
    { "names": ["rmdir"], "action": "SCMP_ACT_TRAP", "excludes": { "minKernel": "5.10" } },
    { "names": ["unlinkat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30 },
    { "names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 7 },
    { "names": ["tkill"], "action": "SCMP_ACT_KILL" },
    { "names": ["pread64"], "action": "SCMP_ACT_ALLOW", "args": [{ "index": 3, "value": 4096, "op": "SCMP_CMP_GE" }, { "index": 2, "value": 65536, "op": "SCMP_CMP_LT" }, { "index": 0, "value": 3, "op": "SCMP_CMP_NE" }] }
  ]
}`;

describe('a docker-format profile', () => {
  const profile = parseSeccompProfile(HAND_WRITTEN, 'hand.json');
  const compile = (arch: SeccompArch, caps: ReadonlySet<string>, kernel = '6.1.0'): Buffer => compileSeccomp(profile, { arch, capabilities: caps, kernel });
  const x86 = compile('x86_64', DOCKER_CAPS);

  it('parses and compiles for both arches', () => {
    expect(profile.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(profile.syscalls[1]?.names).toEqual(['getpid']);
    checkProgram(x86);
    checkProgram(compile('aarch64', DOCKER_CAPS));
  });

  it('actions and the default errno', () => {
    expect(call(x86, 'x86_64', 'read')).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'getpid')).toBe('LOG');
    expect(call(x86, 'x86_64', 'unlinkat')).toBe('ERRNO(30)');
    expect(call(x86, 'x86_64', 'ptrace')).toBe('TRACE(7)');
    expect(call(x86, 'x86_64', 'tkill')).toBe('KILL_THREAD');
    expect(call(x86, 'x86_64', 'open')).toBe('ERRNO(13)');
    expect(describeRet(run(x86, { nr: 20, arch: AUDIT_I386 })), 'listed compat arch: the default').toBe('ERRNO(13)');
  });

  it('conditions on distinct arguments are ANDed, on one argument ORed (as runc does)', () => {
    expect(call(x86, 'x86_64', 'kill', 2n, 15n)).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'kill', 2n, 16n)).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'kill', 1n, 9n)).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'lseek', 3n, 0n, 0n)).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'lseek', 3n, 0n, 2n)).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'lseek', 3n, 0n, 1n)).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'pread64', 4n, 0n, 100n, 8192n)).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'pread64', 3n, 0n, 100n, 8192n)).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'pread64', 4n, 0n, 65536n, 8192n)).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'pread64', 4n, 0n, 100n, 4095n)).toBe('ERRNO(13)');
  });

  it('rules for one syscall decide in order: MASKED_EQ first, then the catch-all', () => {
    expect(call(x86, 'x86_64', 'mmap', 0n, 4096n, 3n)).toBe('ALLOW'); // PROT_READ|PROT_WRITE
    expect(call(x86, 'x86_64', 'mmap', 0n, 4096n, 7n)).toBe('KILL_PROCESS'); // PROT_EXEC too
  });

  it('includes and excludes: caps (all needed), arches (GOARCH names), minKernel', () => {
    expect(call(x86, 'x86_64', 'umask')).toBe('ERRNO(13)');
    expect(call(compile('x86_64', withCaps('CAP_SYS_ADMIN')), 'x86_64', 'umask')).toBe('ERRNO(13)');
    expect(call(compile('x86_64', withCaps('CAP_SYS_ADMIN', 'CAP_NET_ADMIN')), 'x86_64', 'umask')).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'fchdir')).toBe('ALLOW');
    expect(call(compile('aarch64', DOCKER_CAPS), 'aarch64', 'fchdir')).toBe('ERRNO(13)');
    expect(call(x86, 'x86_64', 'chdir')).toBe('ALLOW');
    expect(call(x86, 'x86_64', 'rmdir')).toBe('ERRNO(13)');
    const old = compile('x86_64', DOCKER_CAPS, '5.4.0-150-generic');
    expect(call(old, 'x86_64', 'chdir')).toBe('ERRNO(13)');
    expect(call(old, 'x86_64', 'rmdir')).toBe('TRAP');
  });

  it('a name the arch lacks is skipped, the rest of the rule still applies', () => {
    expect(call(x86, 'x86_64', 'write')).toBe('ALLOW');
    expect(call(compile('aarch64', DOCKER_CAPS), 'aarch64', 'write')).toBe('ALLOW');
  });
});

describe('64-bit argument comparisons', () => {
  const edges = [0n, 1n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 0x100000001n, 0x1ffffffffn, 0xfffffffe00000000n,
    0xffffffff00000000n, 0xffffffffffffffffn, 0x123456789abcdefn];
  const holds = (op: string, a: bigint, v: bigint, v2: bigint): boolean => {
    switch (op) {
      case 'SCMP_CMP_EQ': return a === v;
      case 'SCMP_CMP_NE': return a !== v;
      case 'SCMP_CMP_LT': return a < v;
      case 'SCMP_CMP_LE': return a <= v;
      case 'SCMP_CMP_GT': return a > v;
      case 'SCMP_CMP_GE': return a >= v;
      default: return (a & v) === v2;
    }
  };
  it.each(['SCMP_CMP_EQ', 'SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_GT', 'SCMP_CMP_GE', 'SCMP_CMP_MASKED_EQ'] as const)('%s agrees with unsigned 64-bit arithmetic', (op) => {
    for (const v of edges) {
      const v2 = op === 'SCMP_CMP_MASKED_EQ' ? v & 0xff00ff00ff00ff01n : 0n;
      const profile: SeccompProfile = {
        defaultAction: 'SCMP_ACT_ERRNO',
        syscalls: [{ names: ['ioctl'], action: 'SCMP_ACT_ALLOW', args: [{ index: 5, value: v, valueTwo: v2, op }] }],
      };
      const program = compileSeccomp(profile, { arch: 'x86_64', capabilities: DOCKER_CAPS });
      for (const a of [...edges, ...edges.map((e) => e & 0xff00ff00ff00ff01n)]) {
        expect(call(program, 'x86_64', 'ioctl', 0n, 0n, 0n, 0n, 0n, a), `${op} ${a} ${v} ${v2}`).toBe(holds(op, a, v, v2) ? 'ALLOW' : 'EPERM');
      }
    }
  });
});

describe('long programs', () => {
  it('more than 255 instructions between a jump and its target: trampolines keep every decision right', () => {
    const values = Array.from({ length: 300 }, (_, i) => BigInt(0x5400 + i * 3));
    const profile: SeccompProfile = {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['ioctl'], action: 'SCMP_ACT_ALLOW', args: values.map((value) => ({ index: 1, value, op: 'SCMP_CMP_EQ' as const })) },
        { names: ['read', 'write', 'close', 'mkdirat', 'unlinkat'], action: 'SCMP_ACT_ALLOW' },
        { names: ['fcntl'], action: 'SCMP_ACT_ERRNO', errnoRet: 22, args: [{ index: 1, value: 1n, op: 'SCMP_CMP_EQ' }] },
      ],
    };
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const program = compileSeccomp(profile, { arch, capabilities: DOCKER_CAPS });
      const insns = checkProgram(program);
      expect(insns.length).toBeGreaterThan(1200);
      expect(insns.some((i) => i.code === JA), 'a trampoline').toBe(true);
      for (const v of values) expect(call(program, arch, 'ioctl', 0n, v), `ioctl ${v}`).toBe('ALLOW');
      for (const v of [0x5401n, 0x5400n + 900n, 0n]) expect(call(program, arch, 'ioctl', 0n, v)).toBe('EPERM');
      // Syscalls on both sides of the big leaf in the search tree.
      for (const name of ['read', 'write', 'close', 'mkdirat', 'unlinkat']) expect(call(program, arch, name), name).toBe('ALLOW');
      expect(call(program, arch, 'fcntl', 0n, 1n)).toBe('ERRNO(22)');
      expect(call(program, arch, 'fcntl', 0n, 2n)).toBe('EPERM');
      expect(call(program, arch, 'openat')).toBe('EPERM');
    }
  });

  it('a profile needing more than 4096 instructions is refused, naming the profile', () => {
    const values = Array.from({ length: 1200 }, (_, i) => ({ index: 1, value: BigInt(i), op: 'SCMP_CMP_EQ' as const }));
    const profile = parseSeccompProfile(JSON.stringify({
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [{ names: ['ioctl'], action: 'SCMP_ACT_ALLOW', args: values.map((a) => ({ ...a, value: Number(a.value) })) }],
    }), 'huge.json');
    expect(() => compileSeccomp(profile, { arch: 'x86_64', capabilities: DOCKER_CAPS })).toThrow(/huge\.json.*more than the kernel's limit of 4096/);
  });
});

describe('bad profiles', () => {
  const error = (text: string, source = '/etc/ferry/bad.json'): { message: string; hint: string | undefined } => {
    try {
      parseSeccompProfile(text, source);
    } catch (err) {
      if (!isFerryError(err, 'USAGE')) throw err;
      return { message: err.message, hint: err.hint };
    }
    throw new Error('no error');
  };

  it('an unknown default action names the file and the field', () => {
    const e = error('{"defaultAction": "SCMP_ACT_NOPE"}');
    expect(e.message).toBe('seccomp profile /etc/ferry/bad.json: defaultAction "SCMP_ACT_NOPE" is not a seccomp action');
    expect(e.hint).toContain('SCMP_ACT_ERRNO');
  });

  it('not JSON, not an object, no default action', () => {
    expect(error('{"defaultAction": ').message).toMatch(/^seccomp profile \/etc\/ferry\/bad\.json: not JSON: /);
    expect(error('[]').message).toContain('must be a JSON object');
    expect(error('{"syscalls": []}').message).toContain('defaultAction is missing');
  });

  it('an unknown comparison names the syscall and the argument', () => {
    const e = error(JSON.stringify({ defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }, { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 0, op: 'SCMP_CMP_MASKED' }] }] }));
    expect(e.message).toBe('seccomp profile /etc/ferry/bad.json: syscalls[1] (personality): args[0].op "SCMP_CMP_MASKED" is not a comparison');
  });

  it('an unknown action, a bad index, a value past 2^53, errnoRet with ALLOW, NOTIFY', () => {
    const one = (rule: object): string => error(JSON.stringify({ defaultAction: 'SCMP_ACT_ERRNO', syscalls: [rule] })).message;
    expect(one({ names: ['mount'], action: 'SCMP_ACT_ALLOWED' })).toContain('syscalls[0] (mount): action "SCMP_ACT_ALLOWED" is not a seccomp action');
    expect(one({ names: ['mount'], action: 'SCMP_ACT_ALLOW', args: [{ index: 6, value: 0, op: 'SCMP_CMP_EQ' }] })).toContain('(mount): args[0].index 6 is not an argument index');
    expect(one({ names: ['mount'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 2 ** 60, op: 'SCMP_CMP_EQ' }] })).toContain('args[0].value');
    expect(one({ names: ['mount'], action: 'SCMP_ACT_ALLOW', errnoRet: 1 })).toContain('has errnoRet with SCMP_ACT_ALLOW');
    expect(one({ names: ['mount'], action: 'SCMP_ACT_ERRNO', errnoRet: 5000 })).toContain('errnoRet 5000 is not an errno');
    expect(one({ names: ['mount'], action: 'SCMP_ACT_NOTIFY' })).toContain('SCMP_ACT_NOTIFY is not supported');
    expect(one({ name: 'mount', names: ['umount2'], action: 'SCMP_ACT_ALLOW' })).toContain('has both "name" and "names"');
    expect(one({ names: [], action: 'SCMP_ACT_ALLOW' })).toContain('syscalls[0] names no syscall');
  });

  it('a misspelt field is refused rather than ignored (a lost "excludes" would grant the call)', () => {
    const e = error(JSON.stringify({ defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ names: ['clone'], action: 'SCMP_ACT_ALLOW', exclude: { caps: ['CAP_SYS_ADMIN'] } }] }));
    expect(e.message).toContain('syscalls[0] (clone) has an unknown field "exclude"');
    expect(error('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_65"]}').message).toContain('architectures[0] "SCMP_ARCH_X86_65" is not an architecture');
    expect(error('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]}').message).toContain('minKernel "four" is not a kernel version');
  });
});

describe('the filter in a real kernel', () => {
  const execFileP = promisify(execFile);
  // python3's ctypes installs the program (no_new_privs, then seccomp(2)) and makes raw syscalls.
  const SCRIPT = `
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
cfg = json.load(open(sys.argv[1]))
class Prog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
code = open(sys.argv[2], 'rb').read()
buf = ctypes.create_string_buffer(code, len(code))
prog = Prog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
if libc.prctl(38, 1, 0, 0, 0) != 0:
    sys.exit('prctl(PR_SET_NO_NEW_PRIVS): ' + errno.errorcode[ctypes.get_errno()])
if libc.syscall(ctypes.c_long(cfg['seccomp']), ctypes.c_long(1), ctypes.c_long(0), ctypes.byref(prog)) != 0:
    sys.exit('seccomp(SET_MODE_FILTER): ' + errno.errorcode[ctypes.get_errno()])
out = {}
for label, nr, args in cfg['calls']:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    out[label] = 'ok' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print(json.dumps(out))
`;
  const arch = ((): SeccompArch | undefined => {
    try {
      return currentSeccompArch();
    } catch (err) {
      if (isFerryError(err, 'UNSUPPORTED')) return undefined;
      throw err;
    }
  })();
  it.skipIf(arch === undefined)('the kernel loads the default program and it decides as the interpreter does', async (ctx) => {
    if (arch === undefined) return;
    const dir = await mkdtemp(join(tmpdir(), 'ferry-seccomp-'));
    try {
      const n = (name: string): number => nr(arch, name);
      const calls: Array<[string, number, number[]]> = [
        ['getpid', n('getpid'), []],
        ['keyctl', n('keyctl'), [0, -3, 0]], // KEYCTL_GET_KEYRING_ID of the session keyring
        ['unshare-user', n('unshare'), [Number(CLONE_NEWUSER)]],
        ['clone3', n('clone3'), [0, 0]],
        ['socket-vsock', n('socket'), [40, 1, 0]],
        ['socket-vsock-high', n('socket'), [Number(40n | (1n << 32n)), 1, 0]],
        ['socket-inet', n('socket'), [2, 1, 0]],
        ['personality-query', n('personality'), [0xffffffff]],
        ['personality-no-aslr', n('personality'), [0x0040000]],
        ['fchmodat2', Math.max(...syscallTable(arch).values()) + 2, [-100, 0, 0, 0]],
        ['mount', n('mount'), [0, 0, 0, 0, 0]],
      ];
      if (arch === 'x86_64') calls.push(['x32-getpid', 0x40000000 + n('getpid'), []]);
      await writeFile(join(dir, 'calls.json'), JSON.stringify({ seccomp: n('seccomp'), calls }));
      await writeFile(join(dir, 'filter.bpf'), defaultSeccompProgram(arch, DOCKER_CAPS));
      await writeFile(join(dir, 'probe.py'), SCRIPT);
      let stdout: string;
      try {
        ({ stdout } = await execFileP('python3', [join(dir, 'probe.py'), join(dir, 'calls.json'), join(dir, 'filter.bpf')]));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ctx.skip(); // no python3 here
        throw err;
      }
      expect(JSON.parse(stdout)).toEqual({
        'getpid': 'ok',
        'keyctl': 'EPERM',
        'unshare-user': 'EPERM',
        'clone3': 'ENOSYS',
        'socket-vsock': 'EPERM',
        'socket-vsock-high': 'EPERM',
        'socket-inet': 'ok',
        'personality-query': 'ok',
        'personality-no-aslr': 'EPERM',
        'fchmodat2': 'ENOSYS',
        'mount': 'EPERM',
        ...(arch === 'x86_64' ? { 'x32-getpid': 'EPERM' } : {}),
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
