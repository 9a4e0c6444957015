import { readFileSync } from 'node:fs';
import { randomBytes } from '../io/random.js';

/**
 * Who owns a lock, a lease or a temp entry: `<pid>.<start time>`. The start time (clock ticks
 * since boot, /proc/PID/stat field 22) tells a live owner from a later process that reuses its pid.
 */
function startTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

let own: string | undefined;

/** This process's owner token. */
export function ownerToken(): string {
  own ??= `${process.pid}.${startTime(process.pid) ?? '0'}`;
  return own;
}

const TOKEN_RE = /^(\d+)\.(\d+)/;

/** The owner token at the start of a name, if any. */
export function ownerOf(name: string): string | undefined {
  return TOKEN_RE.exec(name)?.[0];
}

/** Is the process that wrote this token still running? */
export function isOwnerAlive(token: string): boolean {
  const m = TOKEN_RE.exec(token);
  if (!m) return false;
  const pid = Number(m[1]);
  if (token === ownerToken()) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: it exists, owned by another user.
  }
  const start = startTime(pid);
  if (start === undefined) return process.platform !== 'linux';
  return m[2] === '0' || start === m[2];
}

/** A fresh name for a temp entry owned by this process: `<token>-<random>-<kind>`. */
export function ownedName(kind: string): string {
  return `${ownerToken()}-${randomBytes(6).toString('hex')}-${kind}`;
}
