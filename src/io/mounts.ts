import { readFileSync, realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { FerryError, messageOf } from '../errors.js';

/** One line of /proc/self/mountinfo, as far as ferry needs it. */
export interface MountEntry {
  mountPoint: string;
  /** Per-mount options (ro, nosuid, nodev, noexec, ...). */
  options: string[];
  fsType: string;
  source: string;
  /** The filesystem's own options (for cgroup v1: the controllers of that hierarchy). */
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescape(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const tail = right.split(' ');
    if (fields.length < 6 || tail.length < 2) continue;
    entries.push({ mountPoint: unescape(fields[4]!), options: fields[5]!.split(','), fsType: tail[0]!, source: unescape(tail[1]!), superOptions: (tail[2] ?? '').split(',').filter((o) => o !== '') });
  }
  return entries;
}

/**
 * The mount that holds `path` (the last-mounted one at the longest matching mount point), from
 * /proc/self/mountinfo. `path` need not exist yet: its nearest existing ancestor is used.
 * Undefined when no listed mount holds it: inside a chroot whose root is not itself a mount
 * point, the kernel leaves out the mounts above the root.
 */
export function mountOf(path: string): MountEntry | undefined {
  let real = path;
  for (;;) {
    try {
      real = realpathSync(real);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(real) === real) throw err;
      real = dirname(real);
    }
  }
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch (err) {
    throw new FerryError('UNSUPPORTED', `read /proc/self/mountinfo: ${messageOf(err)}`, { cause: err, hint: 'mount /proc (mount -t proc proc /proc)' });
  }
  let best: MountEntry | undefined;
  for (const entry of parseMountInfo(text)) {
    const mp = entry.mountPoint;
    const inside = mp === '/' || real === mp || real.startsWith(`${mp}/`);
    // Later lines are mounted later: at an equal mount point the later one is on top.
    if (inside && (best === undefined || mp.length >= best.mountPoint.length)) best = entry;
  }
  return best;
}
