import { release } from 'node:os';
import { FerryError, UsageError } from '../../errors.js';
import { defaultSeccompProfile } from './default-profile.js';
import {
  MAX_ERRNO, parseKernelVersion, type SeccompAction, type SeccompArchitecture, type SeccompFilter, type SeccompFlag,
  type SeccompOp, type SeccompProfile,
} from './profile.js';
import { syscallTable, type SeccompArch } from './syscalls.js';

/**
 * Compiles a docker-format profile into a classic BPF program for seccomp(SECCOMP_SET_MODE_FILTER):
 * struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }[], little-endian, as the launcher installs it.
 *
 * Shape of the program:
 *   1. seccomp_data.arch: the native arch goes on; the arch's 32-bit compat ABI (i386, arm), if the
 *      profile lists it, gets the refusal; any other arch is killed (KILL_PROCESS).
 *   2. x86_64: x32 numbers (bit 30) get the refusal; ferry has no x32 table.
 *   3. a binary search on the syscall number over ranges with one outcome each, so a syscall costs
 *      about log2(ranges) comparisons; the leaf of an argument-conditioned syscall tests its rules.
 * "Refusal" is the default action when that refuses, else ERRNO(EPERM): an allow-by-default profile
 * must not be bypassed through an ABI whose numbers it did not name.
 *
 * Rules for one syscall are tried in profile order; the first whose conditions hold decides, and
 * none holding gives the default action. Syscalls above the last number in ferry's table (newer
 * than its headers) get ENOSYS when the default refuses, as runc does, so libc falls back.
 */

export interface SeccompCompileOptions {
  arch: SeccompArch;
  /** The container's capabilities (bounding set), e.g. 'CAP_SYS_ADMIN'; they select rules. */
  capabilities: ReadonlySet<string>;
  /** The kernel release the filter will run on, for minKernel rules; default: this host's. */
  kernel?: string;
}

/** The kernel's limit on a program's length (BPF_MAXINSNS). */
export const BPF_MAXINSNS = 4096;

/** seccomp_data.arch of each architecture (linux/audit.h). */
export const AUDIT_ARCH: Readonly<Record<SeccompArch, number>> = { x86_64: 0xc000003e, aarch64: 0xc00000b7 };
const AUDIT_ARCH_I386 = 0x40000003;
const AUDIT_ARCH_ARM = 0x40000028;
const X32_SYSCALL_BIT = 0x40000000;

/** Return values of a seccomp filter (linux/seccomp.h). */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

const EPERM = 1;
const ENOSYS = 38;

// Classic BPF opcodes (linux/filter.h) used here.
const LD_W_ABS = 0x20;
const ALU_AND_K = 0x54;
const JMP_JA = 0x05;
const JMP_JEQ_K = 0x15;
const JMP_JGT_K = 0x25;
const JMP_JGE_K = 0x35;
const RET_K = 0x06;

// struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. Both arches are
// little-endian, so an argument's low word comes first.
const DATA_NR = 0;
const DATA_ARCH = 4;
const argLow = (index: number): number => 16 + 8 * index;
const argHigh = (index: number): number => 16 + 8 * index + 4;

const NATIVE_ARCH_NAME: Readonly<Record<SeccompArch, SeccompArchitecture>> = { x86_64: 'SCMP_ARCH_X86_64', aarch64: 'SCMP_ARCH_AARCH64' };
const COMPAT: Readonly<Record<SeccompArch, { name: SeccompArchitecture; audit: number }>> = {
  x86_64: { name: 'SCMP_ARCH_X86', audit: AUDIT_ARCH_I386 },
  aarch64: { name: 'SCMP_ARCH_ARM', audit: AUDIT_ARCH_ARM },
};
/** docker matches includes/excludes "arches" against Go's GOARCH. */
const GOARCH: Readonly<Record<SeccompArch, string>> = { x86_64: 'amd64', aarch64: 'arm64' };

const U32 = 0xffffffffn;
const U64_MAX = (1n << 64n) - 1n;

/** The architecture ferry runs on, for its filter. */
export function currentSeccompArch(): SeccompArch {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  throw new FerryError('UNSUPPORTED', `seccomp: ferry has no syscall table for ${process.arch}`, {
    hint: 'run the container with --security-opt seccomp=unconfined',
  });
}

/** ferry's default filter (docker's profile) for a container with these capabilities. */
export function defaultSeccompProgram(arch: SeccompArch, capabilities: ReadonlySet<string>): Buffer {
  return compileSeccomp(defaultSeccompProfile(), { arch, capabilities });
}

const FILTER_FLAG_BITS: Readonly<Record<SeccompFlag, number>> = {
  SECCOMP_FILTER_FLAG_TSYNC: 1,
  SECCOMP_FILTER_FLAG_LOG: 2,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW: 4,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: 32,
};

/** The profile's "flags" as the flags argument of seccomp(SECCOMP_SET_MODE_FILTER). */
export function seccompFilterFlags(profile: SeccompProfile): number {
  return (profile.flags ?? []).reduce((bits, f) => bits | FILTER_FLAG_BITS[f], 0);
}

interface Condition {
  readonly index: number;
  readonly op: SeccompOp;
  readonly value: bigint;
  readonly valueTwo: bigint;
}

/** One way a syscall can be decided: all conditions hold -> ret. */
interface Rule {
  readonly ret: number;
  readonly conditions: readonly Condition[];
}

type Outcome = { readonly kind: 'ret'; readonly ret: number } | { readonly kind: 'rules'; readonly nr: number; readonly rules: readonly Rule[] };

interface Range {
  readonly lo: number;
  readonly hi: number;
  readonly outcome: Outcome;
}

/** Compile `profile` for one architecture and capability set. */
export function compileSeccomp(profile: SeccompProfile, options: SeccompCompileOptions): Buffer {
  const source = profile.source ?? '(unnamed)';
  const fail = (what: string, hint?: string): never => {
    throw new UsageError(`seccomp profile ${source}: ${what}`, hint === undefined ? {} : { hint });
  };
  const { arch } = options;
  const table = syscallTable(arch);
  const defaultRet = actionRet(profile.defaultAction, profile.defaultErrnoRet, 'defaultAction', fail);
  const refusing = !['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_TRACE'].includes(profile.defaultAction);
  const refusal = refusing ? defaultRet : errnoRet(EPERM);

  let kernel: readonly [number, number] | undefined;
  const kernelVersion = (): readonly [number, number] => {
    if (kernel === undefined) {
      const text = options.kernel ?? release();
      kernel = parseKernelVersion(text) ?? fail(`the kernel version "${text}" is not MAJOR.MINOR`, 'pass the kernel release, e.g. "6.1.0"');
    }
    return kernel;
  };
  const atLeast = (min: string, where: string): boolean => {
    const want = parseKernelVersion(min) ?? fail(`${where}: minKernel "${min}" is not MAJOR.MINOR`);
    const have = kernelVersion();
    return have[0] > want[0] || (have[0] === want[0] && have[1] >= want[1]);
  };
  // moby's rules: includes need every cap, the arch and the kernel; excludes skip on any of them.
  const applies = (includes: SeccompFilter, excludes: SeccompFilter, where: string): boolean => {
    if ((excludes.arches ?? []).includes(GOARCH[arch])) return false;
    if ((excludes.caps ?? []).some((c) => options.capabilities.has(c))) return false;
    if (excludes.minKernel !== undefined && atLeast(excludes.minKernel, where)) return false;
    const onlyArches = includes.arches ?? [];
    if (onlyArches.length > 0 && !onlyArches.includes(GOARCH[arch])) return false;
    if ((includes.caps ?? []).some((c) => !options.capabilities.has(c))) return false;
    if (includes.minKernel !== undefined && !atLeast(includes.minKernel, where)) return false;
    return true;
  };

  const byNumber = new Map<number, Rule[]>();
  profile.syscalls.forEach((call, i) => {
    const where = `syscalls[${i}] (${call.names.join(', ')})`;
    if (!applies(call.includes ?? {}, call.excludes ?? {}, where)) return;
    const ret = actionRet(call.action, call.errnoRet, where, fail);
    const conditions = (call.args ?? []).map((a, j): Condition => {
      const valueTwo = a.valueTwo ?? 0n;
      if (!Number.isInteger(a.index) || a.index < 0 || a.index > 5) fail(`${where}: args[${j}].index ${a.index} is not 0 to 5`);
      if (a.value < 0n || a.value > U64_MAX || valueTwo < 0n || valueTwo > U64_MAX) fail(`${where}: args[${j}] has a value outside 64 bits`);
      return { index: a.index, op: a.op, value: a.value, valueTwo };
    });
    // runc: conditions on distinct arguments are ANDed; several on one argument become one rule each.
    const indexes = conditions.map((c) => c.index);
    const alternatives = new Set(indexes).size < indexes.length ? conditions.map((c) => [c]) : [conditions];
    for (const name of call.names) {
      const nr = table.get(name);
      if (nr === undefined) continue; // not a syscall of this arch: skipped, as libseccomp does
      const rules = byNumber.get(nr) ?? [];
      for (const conds of alternatives) rules.push({ ret, conditions: conds });
      byNumber.set(nr, rules);
    }
  });

  const ranges = syscallRanges(byNumber, Math.max(...table.values()), arch === 'x86_64' ? X32_SYSCALL_BIT - 1 : 0xffffffff,
    defaultRet, refusing ? errnoRet(ENOSYS) : defaultRet);

  const a = new Assembler();
  const native = a.label();
  a.stmt(LD_W_ABS, DATA_ARCH);
  const other = a.label();
  a.jump(JMP_JEQ_K, AUDIT_ARCH[arch], native, other);
  a.place(other);
  const compat = COMPAT[arch];
  if (listsArchitecture(profile, arch, compat.name)) {
    const isCompat = a.label();
    const foreign = a.label();
    a.jump(JMP_JEQ_K, compat.audit, isCompat, foreign);
    a.place(isCompat);
    a.ret(refusal);
    a.place(foreign);
  }
  a.ret(SECCOMP_RET.KILL_PROCESS);
  a.place(native);
  a.stmt(LD_W_ABS, DATA_NR);
  if (arch === 'x86_64') {
    const x32 = a.label();
    const x64 = a.label();
    a.jump(JMP_JGE_K, X32_SYSCALL_BIT, x32, x64);
    a.place(x32);
    a.ret(refusal);
    a.place(x64);
  }
  emitSearch(a, ranges, defaultRet);

  const program = a.assemble();
  const count = program.length / 8;
  if (count > BPF_MAXINSNS) {
    fail(`the ${arch} filter needs ${count} instructions, more than the kernel's limit of ${BPF_MAXINSNS}`,
      'use fewer argument conditions, or one rule with many names instead of many rules');
  }
  return program;
}

function errnoRet(errno: number): number {
  return (SECCOMP_RET.ERRNO | errno) >>> 0;
}

function actionRet(action: SeccompAction, errno: number | undefined, where: string, fail: (what: string, hint?: string) => never): number {
  if (errno !== undefined && (!Number.isInteger(errno) || errno < 0 || errno > MAX_ERRNO)) fail(`${where}: errnoRet ${errno} is not 0 to ${MAX_ERRNO}`);
  switch (action) {
    case 'SCMP_ACT_ALLOW': return SECCOMP_RET.ALLOW;
    case 'SCMP_ACT_LOG': return SECCOMP_RET.LOG;
    case 'SCMP_ACT_ERRNO': return errnoRet(errno ?? EPERM);
    // runc passes errnoRet (default EPERM) to the tracer as the message.
    case 'SCMP_ACT_TRACE': return (SECCOMP_RET.TRACE | (errno ?? EPERM)) >>> 0;
    case 'SCMP_ACT_TRAP': return SECCOMP_RET.TRAP;
    case 'SCMP_ACT_KILL':
    case 'SCMP_ACT_KILL_THREAD': return SECCOMP_RET.KILL_THREAD;
    case 'SCMP_ACT_KILL_PROCESS': return SECCOMP_RET.KILL_PROCESS;
  }
}

/** Whether the filter should answer `name` (a compat ABI) rather than kill it as foreign. */
function listsArchitecture(profile: SeccompProfile, arch: SeccompArch, name: SeccompArchitecture): boolean {
  if ((profile.architectures ?? []).includes(name)) return true;
  return (profile.archMap ?? []).some((m) => m.architecture === NATIVE_ARCH_NAME[arch] && m.subArchitectures.includes(name));
}

/**
 * [0, top] cut into ranges of one outcome: a syscall with conditions is a range of its own;
 * numbers past `last` (the table's end) get `beyond`.
 */
function syscallRanges(byNumber: ReadonlyMap<number, readonly Rule[]>, last: number, top: number, defaultRet: number, beyond: number): Range[] {
  const ranges: Range[] = [];
  const push = (lo: number, hi: number, outcome: Outcome): void => {
    const prev = ranges.at(-1);
    if (prev !== undefined && prev.outcome.kind === 'ret' && outcome.kind === 'ret' && prev.outcome.ret === outcome.ret) {
      ranges[ranges.length - 1] = { lo: prev.lo, hi, outcome };
    } else {
      ranges.push({ lo, hi, outcome });
    }
  };
  for (let nr = 0; nr <= last; nr++) {
    const rules = byNumber.get(nr) ?? [];
    // Rules after an unconditional one can never decide.
    const cut = rules.findIndex((r) => r.conditions.length === 0);
    const live = cut < 0 ? rules : rules.slice(0, cut + 1);
    const first = live[0];
    if (first === undefined) push(nr, nr, { kind: 'ret', ret: defaultRet });
    else if (first.conditions.length === 0) push(nr, nr, { kind: 'ret', ret: first.ret });
    else push(nr, nr, { kind: 'rules', nr, rules: live });
  }
  push(last + 1, top, { kind: 'ret', ret: beyond });
  return ranges;
}

/** Binary search: the accumulator holds nr, known to lie in [ranges[0].lo, ranges.at(-1).hi]. */
function emitSearch(a: Assembler, ranges: readonly Range[], defaultRet: number): void {
  if (ranges.length === 1) {
    const only = ranges[0] as Range;
    if (only.outcome.kind === 'ret') a.ret(only.outcome.ret);
    else emitRules(a, only.outcome.rules, defaultRet);
    return;
  }
  const mid = ranges.length >> 1;
  const high = a.label();
  const low = a.label();
  a.jump(JMP_JGE_K, (ranges[mid] as Range).lo, high, low);
  a.place(low);
  emitSearch(a, ranges.slice(0, mid), defaultRet);
  a.place(high);
  emitSearch(a, ranges.slice(mid), defaultRet);
}

function emitRules(a: Assembler, rules: readonly Rule[], defaultRet: number): void {
  for (const rule of rules) {
    if (rule.conditions.length === 0) {
      a.ret(rule.ret); // the last rule (see syscallRanges): nothing after it can decide
      return;
    }
    const next = a.label();
    for (const c of rule.conditions) emitCondition(a, c, next);
    a.ret(rule.ret);
    a.place(next);
  }
  a.ret(defaultRet);
}

/** Falls through when the 64-bit comparison holds, jumps to `fail` when not: both halves are compared. */
function emitCondition(a: Assembler, c: Condition, fail: number): void {
  const hi = (v: bigint): number => Number((v >> 32n) & U32);
  const lo = (v: bigint): number => Number(v & U32);
  const pass = a.label();
  const step = (): number => a.label();
  const v = c.value;
  switch (c.op) {
    case 'SCMP_CMP_EQ':
    case 'SCMP_CMP_NE': {
      const [yes, no] = c.op === 'SCMP_CMP_EQ' ? [pass, fail] : [fail, pass];
      const n = step();
      a.stmt(LD_W_ABS, argHigh(c.index));
      a.jump(JMP_JEQ_K, hi(v), n, no);
      a.place(n);
      a.stmt(LD_W_ABS, argLow(c.index));
      a.jump(JMP_JEQ_K, lo(v), yes, no);
      break;
    }
    case 'SCMP_CMP_GT':
    case 'SCMP_CMP_GE':
    case 'SCMP_CMP_LT':
    case 'SCMP_CMP_LE': {
      // arg > v, arg >= v directly; arg < v is !(arg >= v), arg <= v is !(arg > v).
      const greater = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_GE';
      const [yes, no] = greater ? [pass, fail] : [fail, pass];
      const lowJump = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_LE' ? JMP_JGT_K : JMP_JGE_K;
      const n1 = step();
      const n2 = step();
      a.stmt(LD_W_ABS, argHigh(c.index));
      a.jump(JMP_JGT_K, hi(v), yes, n1);
      a.place(n1);
      a.jump(JMP_JEQ_K, hi(v), n2, no);
      a.place(n2);
      a.stmt(LD_W_ABS, argLow(c.index));
      a.jump(lowJump, lo(v), yes, no);
      break;
    }
    case 'SCMP_CMP_MASKED_EQ': {
      // (arg & value) == valueTwo
      const n = step();
      a.stmt(LD_W_ABS, argHigh(c.index));
      a.stmt(ALU_AND_K, hi(v));
      a.jump(JMP_JEQ_K, hi(c.valueTwo), n, fail);
      a.place(n);
      a.stmt(LD_W_ABS, argLow(c.index));
      a.stmt(ALU_AND_K, lo(v));
      a.jump(JMP_JEQ_K, lo(c.valueTwo), pass, fail);
      break;
    }
  }
  a.place(pass);
}

type Item =
  | { readonly kind: 'label'; readonly label: number }
  | { readonly kind: 'stmt'; readonly code: number; readonly k: number }
  | { readonly kind: 'jump'; readonly code: number; readonly k: number; readonly jt: number; readonly jf: number }
  | { readonly kind: 'ja'; readonly target: number };

/**
 * Instructions with symbolic forward labels. A conditional jump reaches at most 255 instructions
 * ahead (u8 jt/jf): a farther target gets a trampoline, an unconditional JA (32-bit offset)
 * placed right after the jump, which can only be entered through the jump itself.
 */
class Assembler {
  private items: Item[] = [];
  private labels = 0;

  label(): number {
    return this.labels++;
  }

  place(label: number): void {
    this.items.push({ kind: 'label', label });
  }

  stmt(code: number, k: number): void {
    this.items.push({ kind: 'stmt', code, k });
  }

  ret(k: number): void {
    this.stmt(RET_K, k);
  }

  jump(code: number, k: number, jt: number, jf: number): void {
    this.items.push({ kind: 'jump', code, k, jt, jf });
  }

  assemble(): Buffer {
    let items = this.items;
    for (let changed = true; changed;) {
      changed = false;
      const at = addresses(items);
      const out: Item[] = [];
      let pc = 0;
      for (const item of items) {
        out.push(item);
        if (item.kind === 'label') continue;
        if (item.kind === 'jump') {
          const far = (target: number): boolean => offset(at, target, pc) > 255;
          if (far(item.jt) || far(item.jf)) {
            changed = true;
            const trampolines: Item[] = [];
            const retarget = (target: number): number => {
              if (!far(target)) return target;
              const label = this.label();
              trampolines.push({ kind: 'label', label }, { kind: 'ja', target });
              return label;
            };
            const jt = retarget(item.jt);
            const jf = item.jf === item.jt ? jt : retarget(item.jf);
            out[out.length - 1] = { ...item, jt, jf };
            out.push(...trampolines);
          }
        }
        pc++;
      }
      items = out;
    }
    const at = addresses(items);
    const code = items.filter((i) => i.kind !== 'label');
    const buf = Buffer.alloc(code.length * 8);
    code.forEach((item, pc) => {
      const o = pc * 8;
      if (item.kind === 'stmt') {
        buf.writeUInt16LE(item.code, o);
        buf.writeUInt32LE(item.k >>> 0, o + 4);
      } else if (item.kind === 'jump') {
        buf.writeUInt16LE(item.code, o);
        buf.writeUInt8(offset(at, item.jt, pc), o + 2);
        buf.writeUInt8(offset(at, item.jf, pc), o + 3);
        buf.writeUInt32LE(item.k >>> 0, o + 4);
      } else if (item.kind === 'ja') {
        buf.writeUInt16LE(JMP_JA, o);
        buf.writeUInt32LE(offset(at, item.target, pc), o + 4);
      }
    });
    return buf;
  }
}

function addresses(items: readonly Item[]): Map<number, number> {
  const at = new Map<number, number>();
  let pc = 0;
  for (const item of items) {
    if (item.kind === 'label') at.set(item.label, pc);
    else pc++;
  }
  return at;
}

/** cBPF jumps count from the next instruction and only go forward. */
function offset(at: ReadonlyMap<number, number>, label: number, pc: number): number {
  const target = at.get(label);
  if (target === undefined || target <= pc) {
    throw new FerryError('RUNTIME_ERROR', `seccomp compiler: label ${label} is ${target === undefined ? 'never placed' : 'not ahead of its jump'}`);
  }
  return target - pc - 1;
}
