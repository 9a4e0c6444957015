import { UsageError } from '../../errors.js';

/**
 * docker's seccomp profile format (moby profiles/seccomp, `docker run --security-opt seccomp=FILE`),
 * as values: what the JSON says, checked, with the optional parts filled in. Which rules apply to
 * a container (caps, arches, kernel) is decided later, by the compiler.
 */

export const SECCOMP_ACTIONS = [
  'SCMP_ACT_KILL', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE', 'SCMP_ACT_LOG', 'SCMP_ACT_ALLOW',
] as const;
export type SeccompAction = (typeof SECCOMP_ACTIONS)[number];

export const SECCOMP_OPS = [
  'SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ',
] as const;
export type SeccompOp = (typeof SECCOMP_OPS)[number];

/** libseccomp's architecture names, all accepted (a profile names many); ferry filters two of them. */
export const SECCOMP_ARCHITECTURES = [
  'SCMP_ARCH_X86', 'SCMP_ARCH_X86_64', 'SCMP_ARCH_X32', 'SCMP_ARCH_ARM', 'SCMP_ARCH_AARCH64',
  'SCMP_ARCH_MIPS', 'SCMP_ARCH_MIPS64', 'SCMP_ARCH_MIPS64N32', 'SCMP_ARCH_MIPSEL', 'SCMP_ARCH_MIPSEL64',
  'SCMP_ARCH_MIPSEL64N32', 'SCMP_ARCH_PPC', 'SCMP_ARCH_PPC64', 'SCMP_ARCH_PPC64LE', 'SCMP_ARCH_S390',
  'SCMP_ARCH_S390X', 'SCMP_ARCH_PARISC', 'SCMP_ARCH_PARISC64', 'SCMP_ARCH_RISCV64', 'SCMP_ARCH_LOONGARCH64',
  'SCMP_ARCH_M68K', 'SCMP_ARCH_SH', 'SCMP_ARCH_SHEB',
] as const;
export type SeccompArchitecture = (typeof SECCOMP_ARCHITECTURES)[number];

/** Flags for seccomp(SECCOMP_SET_MODE_FILTER); they are not part of the program. */
export const SECCOMP_FLAGS = [
  'SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
  'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
] as const;
export type SeccompFlag = (typeof SECCOMP_FLAGS)[number];

/**
 * One comparison of a syscall argument (all 64 bits). For SCMP_CMP_MASKED_EQ, `value` is the mask
 * and `valueTwo` what the masked argument must equal: (arg & value) == valueTwo.
 */
export interface SeccompArg {
  readonly index: number;
  readonly value: bigint;
  readonly valueTwo?: bigint;
  readonly op: SeccompOp;
}

/**
 * When a rule applies. includes: every cap held, this arch (Go's GOARCH name: amd64, arm64)
 * listed, kernel at least minKernel. excludes: any cap held, the arch listed, kernel >= minKernel.
 */
export interface SeccompFilter {
  readonly caps?: readonly string[];
  readonly arches?: readonly string[];
  readonly minKernel?: string;
}

export interface SeccompSyscall {
  readonly names: readonly string[];
  readonly action: SeccompAction;
  /** The errno of SCMP_ACT_ERRNO (default EPERM), or the message of SCMP_ACT_TRACE. */
  readonly errnoRet?: number;
  /** All must hold (AND); but like runc, several on one argument index become separate rules (OR). */
  readonly args?: readonly SeccompArg[];
  readonly includes?: SeccompFilter;
  readonly excludes?: SeccompFilter;
  readonly comment?: string;
}

export interface SeccompArchMap {
  readonly architecture: SeccompArchitecture;
  readonly subArchitectures: readonly SeccompArchitecture[];
}

export interface SeccompProfile {
  readonly defaultAction: SeccompAction;
  /** The errno of a default SCMP_ACT_ERRNO; EPERM when absent. */
  readonly defaultErrnoRet?: number;
  readonly architectures?: readonly SeccompArchitecture[];
  readonly archMap?: readonly SeccompArchMap[];
  readonly syscalls: readonly SeccompSyscall[];
  readonly flags?: readonly SeccompFlag[];
  /** Where the profile came from, for error messages. */
  readonly source?: string;
}

/** The largest errno the kernel passes back (include/linux/err.h MAX_ERRNO). */
export const MAX_ERRNO = 4095;
const MAX_ARGS = 6;
const HINT = "see docker's seccomp profile format (moby profiles/seccomp/default.json)";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Context for messages: "seccomp profile FILE: syscalls[3] (personality): args[0].op ...". */
class Checker {
  constructor(readonly source: string) {}

  fail(where: string, what: string, hint = HINT): never {
    throw new UsageError(`seccomp profile ${this.source}: ${where}${where === '' ? '' : ' '}${what}`, { hint });
  }

  /** Unknown keys are refused: a misspelt "excludes" would otherwise silently grant a syscall. */
  keys(o: JsonObject, where: string, known: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (!known.includes(k)) this.fail(where, `has an unknown field "${k}"`, `the fields here are ${known.join(', ')}`);
    }
  }

  list(v: Json | undefined, where: string): Json[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(where, 'must be a list');
    return v;
  }

  oneOf<T extends string>(v: Json | undefined, where: string, allowed: readonly T[], what: string): T {
    if (v === 'SCMP_ACT_NOTIFY') this.fail(where, 'SCMP_ACT_NOTIFY is not supported', 'ferry has no seccomp agent to notify; use SCMP_ACT_ERRNO');
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(where, v === undefined ? `is missing (${what})` : `${JSON.stringify(v)} is not ${what}`, `use one of ${allowed.join(', ')}`);
    }
    return v as T;
  }

  strings(v: Json | undefined, where: string): string[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s === '')) this.fail(where, 'must be a list of non-empty strings');
    return [...(v as string[])];
  }

  errno(v: Json | undefined, where: string): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_ERRNO) {
      this.fail(where, `${JSON.stringify(v)} is not an errno`, `an integer from 0 to ${MAX_ERRNO}, e.g. 1 (EPERM) or 38 (ENOSYS)`);
    }
    return v;
  }

  /** JSON numbers are doubles: a value above 2^53 has already lost bits, so it is refused. */
  u64(v: Json | undefined, where: string): bigint {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      this.fail(where, `${JSON.stringify(v ?? null)} is not an integer from 0 to 2^53-1`,
        'ferry reads argument values as JSON numbers, exact only up to 2^53-1');
    }
    return BigInt(v);
  }

  kernel(v: Json | undefined, where: string): string | undefined {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string' || parseKernelVersion(v) === undefined) this.fail(where, `${JSON.stringify(v)} is not a kernel version`, 'write it as MAJOR.MINOR, e.g. "4.8"');
    return v;
  }
}

/** "5.15.0-91-generic" -> [5, 15]; undefined when it does not start with MAJOR.MINOR. */
export function parseKernelVersion(text: string): readonly [number, number] | undefined {
  const m = /^(\d+)\.(\d+)(?:$|[.\-+_~])/.exec(text);
  if (m === null) return undefined;
  return [Number(m[1]), Number(m[2])];
}

function parseFilter(c: Checker, v: Json | undefined, where: string): SeccompFilter {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) c.fail(where, 'must be an object');
  c.keys(v, where, ['caps', 'arches', 'minKernel']);
  const minKernel = c.kernel(v.minKernel, `${where}.minKernel`);
  return {
    caps: c.strings(v.caps, `${where}.caps`),
    arches: c.strings(v.arches, `${where}.arches`),
    ...(minKernel === undefined ? {} : { minKernel }),
  };
}

function parseArg(c: Checker, v: Json | undefined, where: string): SeccompArg {
  if (!isObject(v)) c.fail(where, 'must be an object with index, value and op');
  c.keys(v, where, ['index', 'value', 'valueTwo', 'op']);
  const index = v.index;
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= MAX_ARGS) {
    c.fail(`${where}.index`, `${JSON.stringify(index ?? null)} is not an argument index`, `a syscall has arguments 0 to ${MAX_ARGS - 1}`);
  }
  const op = c.oneOf(v.op, `${where}.op`, SECCOMP_OPS, 'a comparison');
  const value = c.u64(v.value ?? 0, `${where}.value`);
  const valueTwo = c.u64(v.valueTwo ?? 0, `${where}.valueTwo`);
  return { index, value, valueTwo, op };
}

function parseSyscall(c: Checker, v: Json | undefined, i: number): SeccompSyscall {
  let where = `syscalls[${i}]`;
  if (!isObject(v)) c.fail(where, 'must be an object');
  const names = c.strings(v.names, `${where}.names`);
  if (v.name !== undefined && v.name !== null && v.name !== '') {
    if (typeof v.name !== 'string') c.fail(`${where}.name`, 'must be a string');
    if (names.length > 0) c.fail(where, 'has both "name" and "names"', 'use "names" only');
    names.push(v.name);
  }
  if (names.length === 0) c.fail(where, 'names no syscall', 'give "names": ["..."]');
  where = `${where} (${names.join(', ')})`;
  c.keys(v, where, ['name', 'names', 'action', 'errnoRet', 'args', 'comment', 'includes', 'excludes']);
  const action = c.oneOf(v.action, `${where}: action`, SECCOMP_ACTIONS, 'a seccomp action');
  const errnoRet = c.errno(v.errnoRet, `${where}: errnoRet`);
  if (errnoRet !== undefined && action !== 'SCMP_ACT_ERRNO' && action !== 'SCMP_ACT_TRACE') {
    c.fail(where, `has errnoRet with ${action}`, 'errnoRet goes with SCMP_ACT_ERRNO or SCMP_ACT_TRACE');
  }
  const args = c.list(v.args, `${where}: args`).map((a, j) => parseArg(c, a, `${where}: args[${j}]`));
  if (v.comment !== undefined && v.comment !== null && typeof v.comment !== 'string') c.fail(`${where}: comment`, 'must be a string');
  return {
    names,
    action,
    ...(errnoRet === undefined ? {} : { errnoRet }),
    args,
    includes: parseFilter(c, v.includes, `${where}: includes`),
    excludes: parseFilter(c, v.excludes, `${where}: excludes`),
    ...(typeof v.comment === 'string' ? { comment: v.comment } : {}),
  };
}

/**
 * Read a docker-format seccomp profile. `source` (a file name) goes into every message. Syscall
 * names are not checked here: a name one architecture lacks is skipped when compiling for it, as
 * libseccomp does. Unknown actions, comparisons, architectures and fields are errors.
 */
export function parseSeccompProfile(text: string, source: string): SeccompProfile {
  const c: Checker = new Checker(source);
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch (err) {
    throw new UsageError(`seccomp profile ${source}: not JSON: ${err instanceof Error ? err.message : String(err)}`, { hint: HINT, cause: err });
  }
  if (!isObject(doc)) c.fail('', 'must be a JSON object');
  c.keys(doc, 'the profile', ['defaultAction', 'defaultErrnoRet', 'architectures', 'archMap', 'syscalls', 'flags', 'listenerPath', 'listenerMetadata', 'comment']);
  if ((doc.listenerPath ?? '') !== '' || (doc.listenerMetadata ?? '') !== '') {
    c.fail('listenerPath', 'is not supported', 'ferry has no seccomp agent (SCMP_ACT_NOTIFY); remove listenerPath');
  }
  const defaultAction = c.oneOf(doc.defaultAction, 'defaultAction', SECCOMP_ACTIONS, 'a seccomp action');
  const defaultErrnoRet = c.errno(doc.defaultErrnoRet, 'defaultErrnoRet');
  const architectures = c.strings(doc.architectures, 'architectures').map((a, i) => c.oneOf(a, `architectures[${i}]`, SECCOMP_ARCHITECTURES, 'an architecture'));
  const archMap = c.list(doc.archMap, 'archMap').map((m, i): SeccompArchMap => {
    const where = `archMap[${i}]`;
    if (!isObject(m)) c.fail(where, 'must be an object');
    c.keys(m, where, ['architecture', 'subArchitectures']);
    return {
      architecture: c.oneOf(m.architecture, `${where}.architecture`, SECCOMP_ARCHITECTURES, 'an architecture'),
      subArchitectures: c.strings(m.subArchitectures, `${where}.subArchitectures`).map((a, j) => c.oneOf(a, `${where}.subArchitectures[${j}]`, SECCOMP_ARCHITECTURES, 'an architecture')),
    };
  });
  if (architectures.length > 0 && archMap.length > 0) c.fail('', 'has both "architectures" and "archMap"', 'docker refuses this too: keep one');
  const flags = c.strings(doc.flags, 'flags').map((f, i) => c.oneOf(f, `flags[${i}]`, SECCOMP_FLAGS, 'a seccomp filter flag'));
  const syscalls = c.list(doc.syscalls, 'syscalls').map((s, i) => parseSyscall(c, s, i));
  return {
    defaultAction,
    ...(defaultErrnoRet === undefined ? {} : { defaultErrnoRet }),
    architectures,
    archMap,
    syscalls,
    flags,
    source,
  };
}
