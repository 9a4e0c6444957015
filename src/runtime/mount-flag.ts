import { posix } from 'node:path';
import { UsageError } from '../errors.js';
import type { LaunchBind, LaunchTmpfs } from './launcher.js';
import { parseTmpfs } from './security.js';
import { anonymousVolumeName, checkVolumeName, type NamedVolumeSpec } from './volumes.js';

/**
 * `--mount type=bind|volume|tmpfs,source=..,target=..,readonly,...` (docker's syntax), mapped
 * onto what -v and --tmpfs make, with the same rules: every mount nodev, binds and volumes nosuid
 * unless asked, tmpfs also noexec. Unlike -v, a bind's source must exist (as docker's --mount).
 */
export interface ParsedMounts {
  volumes: Array<LaunchBind | NamedVolumeSpec>;
  tmpfs: LaunchTmpfs[];
  /** Bind sources that must exist (checked by create, before anything is made). */
  mustExist: string[];
}

function bool(text: string, value: string | undefined, key: string): boolean {
  if (value === undefined || value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new UsageError(`--mount ${text}: ${key}=${value} is not true or false`);
}

/** docker's CSV: fields split on commas, a field may be quoted ("a,b"). */
function fields(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (quoted) throw new UsageError(`--mount ${text}: an unclosed quote`);
  out.push(cur);
  return out;
}

export function parseMount(text: string): { volume?: LaunchBind | NamedVolumeSpec; tmpfs?: LaunchTmpfs; mustExist?: string } {
  if (text.includes('\0')) throw new UsageError(`--mount ${text}: holds a NUL byte`);
  let type = 'volume';
  let source: string | undefined;
  let target: string | undefined;
  let readOnly = false;
  let noCopy = false;
  const tmpfsOpts: string[] = [];
  const extra: Array<'suid' | 'noexec' | 'exec'> = [];
  for (const field of fields(text)) {
    if (field === '') continue;
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? undefined : field.slice(eq + 1);
    const need = (): string => {
      if (value === undefined || value === '') throw new UsageError(`--mount ${text}: ${key} needs a value`);
      return value;
    };
    switch (key) {
      case 'type': type = need(); break;
      case 'source': case 'src': source = need(); break;
      case 'target': case 'destination': case 'dst': target = need(); break;
      case 'readonly': case 'ro': readOnly = bool(text, value, key); break;
      case 'volume-nocopy': noCopy = bool(text, value, key); break;
      case 'volume-driver':
        if (need() !== 'local') throw new UsageError(`--mount ${text}: only the local volume driver exists here`);
        break;
      case 'bind-propagation':
        // Every mount lives in the container's own mount namespace, private to it.
        if (need() !== 'rprivate' && value !== 'private') throw new UsageError(`--mount ${text}: bind-propagation=${value} is not supported (mounts are private to the container)`);
        break;
      case 'consistency': need(); break; // docker ignores it on Linux
      case 'tmpfs-size': tmpfsOpts.push(`size=${need()}`); break;
      case 'tmpfs-mode': tmpfsOpts.push(`mode=${need()}`); break;
      // ferry's -v options, spelled as --mount fields.
      case 'suid': case 'noexec': case 'exec': if (bool(text, value, key)) extra.push(key); break;
      case 'volume-opt': case 'volume-label': case 'bind-nonrecursive': case 'tmpfs-options':
        throw new UsageError(`--mount ${text}: ${key} is not supported`, { hint: 'give the mount without it' });
      default:
        throw new UsageError(`--mount ${text}: unknown field "${key}"`, { hint: 'type, source, target, readonly, volume-nocopy, tmpfs-size, tmpfs-mode' });
    }
  }
  if (target === undefined) throw new UsageError(`--mount ${text}: target is missing`, { hint: 'e.g. --mount type=volume,source=data,target=/data' });
  if (!target.startsWith('/')) throw new UsageError(`--mount ${text}: the target must be an absolute path`);
  const destination = posix.normalize(target).replace(/\/+$/, '');
  if (destination === '' || destination === '/') throw new UsageError(`--mount ${text}: cannot mount over the container's root`);
  const flags = { ...(extra.includes('suid') ? { suid: true } : {}), ...(extra.includes('noexec') ? { noexec: true } : {}) };
  if (type === 'tmpfs') {
    if (source !== undefined) throw new UsageError(`--mount ${text}: a tmpfs has no source`);
    const opts = [...tmpfsOpts, ...(readOnly ? ['ro'] : []), ...(extra.includes('exec') ? ['exec'] : []), ...(extra.includes('suid') ? ['suid'] : [])];
    const spec = opts.length > 0 ? `${destination}:${opts.join(',')}` : destination;
    try {
      return { tmpfs: parseTmpfs(spec) };
    } catch (err) {
      // Say it in the user's words (--mount), not --tmpfs's.
      if (!(err instanceof UsageError)) throw err;
      throw new UsageError(`--mount ${text}: ${err.message.replace(`--tmpfs ${spec}: `, '')}`, { cause: err, ...(err.hint !== undefined ? { hint: err.hint } : {}) });
    }
  }
  if (tmpfsOpts.length > 0) throw new UsageError(`--mount ${text}: tmpfs-size and tmpfs-mode are for type=tmpfs`);
  if (type === 'bind') {
    if (source === undefined) throw new UsageError(`--mount ${text}: a bind needs a source`);
    if (!source.startsWith('/')) throw new UsageError(`--mount ${text}: the bind source must be an absolute host path`);
    if (noCopy) throw new UsageError(`--mount ${text}: volume-nocopy is for type=volume`);
    const host = posix.normalize(source);
    return { volume: { source: host, destination, readOnly, ...flags }, mustExist: host };
  }
  if (type === 'volume') {
    const anonymous = source === undefined;
    const name = source === undefined ? anonymousVolumeName() : checkVolumeName(source);
    return { volume: { name, bind: { source: '', destination, readOnly, ...flags }, noCopy, ...(anonymous ? { anonymous } : {}) } };
  }
  throw new UsageError(`--mount ${text}: type=${type} is not supported`, { hint: 'bind, volume or tmpfs' });
}

export function parseMounts(texts: readonly string[]): ParsedMounts {
  const out: ParsedMounts = { volumes: [], tmpfs: [], mustExist: [] };
  for (const t of texts) {
    const m = parseMount(t);
    if (m.volume !== undefined) out.volumes.push(m.volume);
    if (m.tmpfs !== undefined) out.tmpfs.push(m.tmpfs);
    if (m.mustExist !== undefined) out.mustExist.push(m.mustExist);
  }
  return out;
}
