import { UsageError } from '../errors.js';

/**
 * Linux capabilities by name (linux/capability.h), and docker's rules for --cap-add/--cap-drop:
 * names with or without "CAP_", case-insensitive, "ALL" for every one; drops apply first, then
 * adds (so `--cap-drop ALL --cap-add NET_BIND_SERVICE` keeps just that one).
 */
export const CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ',
  'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** docker's default set for a container's root (moby oci/caps/defaults.go). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** "net_admin", "CAP_NET_ADMIN" -> "CAP_NET_ADMIN"; "all" -> "ALL". */
export function normalizeCapability(name: string, flag: string): string {
  const upper = name.trim().toUpperCase();
  if (upper === 'ALL') return 'ALL';
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!CAPABILITIES.includes(full)) {
    throw new UsageError(`${flag} ${name}: unknown capability`, { hint: 'use a name from capabilities(7), e.g. NET_ADMIN, or ALL' });
  }
  return full;
}

export interface CapabilityFlags {
  capAdd?: readonly string[];
  capDrop?: readonly string[];
  privileged?: boolean;
}

/** The capability names a container's root gets, in kernel order. */
export function containerCapabilities(flags: CapabilityFlags): string[] {
  if (flags.privileged === true) return [...CAPABILITIES];
  const drop = (flags.capDrop ?? []).map((c) => normalizeCapability(c, '--cap-drop'));
  const add = (flags.capAdd ?? []).map((c) => normalizeCapability(c, '--cap-add'));
  const set = new Set(drop.includes('ALL') ? [] : DEFAULT_CAPABILITIES.filter((c) => !drop.includes(c)));
  for (const c of add.includes('ALL') ? CAPABILITIES : add) set.add(c);
  return CAPABILITIES.filter((c) => set.has(c));
}

/** The bit mask the launcher takes (bit N = capability N). */
export function capabilityMask(names: readonly string[]): bigint {
  let mask = 0n;
  for (const n of names) {
    const bit = CAPABILITIES.indexOf(n);
    if (bit < 0) throw new UsageError(`unknown capability ${n}`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}
