import { readFile } from '../io/fs-promises.js';
import { posix } from 'node:path';
import { UsageError, messageOf } from '../errors.js';
import { capabilityMask, containerCapabilities, DEFAULT_CAPABILITIES } from './capabilities.js';
import type { LaunchTmpfs } from './launcher.js';
import { PRECOMPILED_DEFAULT } from './seccomp/precompiled.js';

/** The compiler, loaded only off the common path (custom profiles, other capability sets): ~20 ms of a start. */
const seccompCompiler = (): Promise<typeof import('./seccomp/index.js')> => import('./seccomp/index.js');

/**
 * What confines a container beyond its namespaces, with docker's defaults and flags:
 * capabilities (--cap-add/--cap-drop/--privileged), the seccomp filter (--security-opt
 * seccomp=unconfined|FILE), no-new-privileges, and --tmpfs mounts.
 */
export interface ContainerSecurity {
  privileged: boolean;
  /** Root's capabilities, by name (CAP_...). */
  capabilities: string[];
  /** default: ferry's docker-equivalent profile; profile: the file given, copied beside the container. */
  seccomp: 'default' | 'unconfined' | 'profile';
  noNewPrivileges: boolean;
}

export interface SecurityFlags {
  privileged?: boolean;
  capAdd?: readonly string[];
  capDrop?: readonly string[];
  /** --security-opt values: seccomp=unconfined, seccomp=FILE, no-new-privileges[:true|false]. */
  securityOpts?: readonly string[];
}

export interface ParsedSecurity {
  security: ContainerSecurity;
  /** The text of seccomp=FILE, validated; stored with the container. */
  seccompProfile: string | undefined;
}

/** docker's --security-opt (both "=" and ":" separate the value, as docker accepts). */
export async function parseSecurity(flags: SecurityFlags): Promise<ParsedSecurity> {
  const privileged = flags.privileged === true;
  let seccomp: ContainerSecurity['seccomp'] = privileged ? 'unconfined' : 'default';
  let seccompProfile: string | undefined;
  let noNewPrivileges = false;
  for (const opt of flags.securityOpts ?? []) {
    const m = /^([a-z-]+)(?:[=:](.*))?$/.exec(opt);
    const key = m?.[1];
    const value = m?.[2];
    if (key === 'seccomp' && value !== undefined && value !== '') {
      if (value === 'unconfined') {
        seccomp = 'unconfined';
        seccompProfile = undefined;
        continue;
      }
      let text: string;
      try {
        text = await readFile(value, 'utf8');
      } catch (err) {
        throw new UsageError(`--security-opt seccomp=${value}: cannot read the profile: ${messageOf(err)}`, { cause: err });
      }
      const { compileSeccomp, currentSeccompArch, parseSeccompProfile } = await seccompCompiler();
      const profile = parseSeccompProfile(text, value);
      // Compiled once now, so a profile that cannot be a filter fails at create, not at start.
      compileSeccomp(profile, { arch: currentSeccompArch(), capabilities: new Set(containerCapabilities(flags)) });
      seccomp = 'profile';
      seccompProfile = text;
    } else if (key === 'no-new-privileges' && (value === undefined || value === 'true' || value === 'false')) {
      noNewPrivileges = value !== 'false';
    } else if (key === 'label' || key === 'apparmor') {
      throw new UsageError(`--security-opt ${opt}: ferry has no SELinux or AppArmor support`, {
        hint: 'ferry confines containers with namespaces, capabilities, seccomp and device rules',
      });
    } else {
      throw new UsageError(`--security-opt ${opt}: unknown option`, {
        hint: 'use seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges',
      });
    }
  }
  return { security: { privileged, capabilities: containerCapabilities(flags), seccomp, noNewPrivileges }, seccompProfile };
}

/** Containers created before these settings existed get docker's defaults. */
export function securityOf(recorded: ContainerSecurity | undefined): ContainerSecurity {
  return recorded ?? { privileged: false, capabilities: containerCapabilities({}), seccomp: 'default', noNewPrivileges: false };
}

/** The launcher's part: capability mask and compiled filter. */
export async function launchSecurity(security: ContainerSecurity, profileText: string | undefined, profileSource: string): Promise<{ capabilities: bigint; seccomp?: Buffer }> {
  const capabilities = capabilityMask(security.capabilities);
  if (security.seccomp === 'unconfined') return { capabilities };
  if (security.seccomp === 'default' && hasDefaultCapabilities(security.capabilities)) {
    const arch = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : undefined;
    if (arch !== undefined) return { capabilities, seccomp: Buffer.from(PRECOMPILED_DEFAULT[arch], 'base64') };
  }
  const { compileSeccomp, currentSeccompArch, defaultSeccompProfile, parseSeccompProfile } = await seccompCompiler();
  const profile = security.seccomp === 'profile' && profileText !== undefined ? parseSeccompProfile(profileText, profileSource) : defaultSeccompProfile();
  return { capabilities, seccomp: compileSeccomp(profile, { arch: currentSeccompArch(), capabilities: new Set(security.capabilities) }) };
}

function hasDefaultCapabilities(capabilities: readonly string[]): boolean {
  return capabilities.length === DEFAULT_CAPABILITIES.length && DEFAULT_CAPABILITIES.every((c) => capabilities.includes(c));
}

const TMPFS_SIZE = /^\d+[kmgKMG%]?$/;

/** `--tmpfs /path[:opts]`: docker's options (size, mode, uid, gid, nr_inodes, ro/rw, exec/noexec, suid/nosuid, nodev). */
export function parseTmpfs(text: string): LaunchTmpfs {
  const colon = text.indexOf(':');
  const path = colon < 0 ? text : text.slice(0, colon);
  const opts = colon < 0 ? '' : text.slice(colon + 1);
  if (!path.startsWith('/')) throw new UsageError(`--tmpfs ${text}: the container path must be absolute`);
  if (path.includes('\0') || opts.includes('\0')) throw new UsageError(`--tmpfs ${text}: holds a NUL byte`);
  const destination = posix.normalize(path).replace(/\/+$/, '');
  if (destination === '' || destination === '/') throw new UsageError(`--tmpfs ${text}: cannot mount over the container's root`);
  const mount: LaunchTmpfs = { tmpfs: true, destination, readOnly: false, data: '', suid: false, exec: false };
  const data: string[] = [];
  for (const o of opts === '' ? [] : opts.split(',')) {
    const eq = o.indexOf('=');
    const key = eq < 0 ? o : o.slice(0, eq);
    const value = eq < 0 ? '' : o.slice(eq + 1);
    const check = (ok: boolean, what: string): void => {
      if (!ok) throw new UsageError(`--tmpfs ${text}: ${key}=${value} is not ${what}`);
    };
    switch (key) {
      case 'ro': case 'rw': mount.readOnly = key === 'ro'; break;
      case 'exec': case 'noexec': mount.exec = key === 'exec'; break;
      case 'suid': case 'nosuid': mount.suid = key === 'suid'; break;
      case 'nodev': break; // always
      case 'size': check(TMPFS_SIZE.test(value), 'a size (e.g. 64m)'); data.push(`size=${value}`); break;
      case 'mode': check(/^[0-7]{3,4}$/.test(value), 'an octal mode'); data.push(`mode=${value}`); break;
      case 'uid': case 'gid': check(/^\d{1,10}$/.test(value) && Number(value) <= 2 ** 31 - 1, 'a numeric id'); data.push(`${key}=${value}`); break;
      case 'nr_inodes': check(/^\d+[kmgKMG]?$/.test(value), 'a count'); data.push(`nr_inodes=${value}`); break;
      case 'dev':
        throw new UsageError(`--tmpfs ${text}: "dev" is refused: device nodes on a container's mounts would reach host devices`);
      default:
        throw new UsageError(`--tmpfs ${text}: unknown option "${key}"`, { hint: 'size=, mode=, uid=, gid=, nr_inodes=, ro, exec, suid' });
    }
  }
  // docker's default: world-writable with the sticky bit, like /tmp.
  if (!data.some((d) => d.startsWith('mode='))) data.push('mode=1777');
  mount.data = data.join(',');
  return mount;
}
