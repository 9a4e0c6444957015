import { readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';

/**
 * Pausing a container while `commit` reads its files, as docker does (`commit --pause`, the
 * default): its processes stop, so the layer is one state of its files, not a mix.
 * - with a freezer cgroup: cgroup v1 freezer.state = FROZEN, or v2 cgroup.freeze = 1, waiting
 *   until the kernel says every task is frozen;
 * - without: SIGSTOP to every process of the container's PID namespace (found by /proc/PID/ns/pid,
 *   plus their descendants, which a nested PID namespace would hide), waiting until each shows
 *   state T, again until a pass finds no new process (one forking while we stop the others).
 * The returned function resumes it (thaw, or SIGCONT to exactly the processes we stopped); call it
 * in a finally.
 */
export type Resume = () => Promise<void>;

export interface PauseOptions {
  /** The container's freezer cgroup directory (v1 freezer node, or a v2 node); none: signals. */
  freezer?: string;
  /** For messages, e.g. "container web". */
  what?: string;
  /** How long to wait for everything to stop; default 10 s. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const POLL_MS = 5;

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

function pauseError(what: string, why: string, cause?: unknown): FerryError {
  return new FerryError('RUNTIME_ERROR', `pause ${what}: ${why}`, {
    ...(cause === undefined ? {} : { cause }),
    hint: 'commit without pausing (--pause=false) to copy the files of the running container as they are',
  });
}

/** Stop every process of the container whose init is `initPid` (host pid); resolves to its resume. */
export async function pauseContainer(initPid: number, options: PauseOptions = {}): Promise<Resume> {
  const what = options.what ?? `the container of pid ${initPid}`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (options.freezer !== undefined) return freeze(options.freezer, what, timeoutMs);
  return stopProcesses(initPid, what, timeoutMs);
}

// ---------------------------------------------------------------------------------------------
// cgroup freezer

async function readOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function freeze(dir: string, what: string, timeoutMs: number): Promise<Resume> {
  // v2 has cgroup.freeze in every non-root node; v1's freezer controller has freezer.state.
  const v2 = (await readOrUndefined(join(dir, 'cgroup.freeze'))) !== undefined;
  const control = join(dir, v2 ? 'cgroup.freeze' : 'freezer.state');
  const [frozenValue, thawedValue] = v2 ? ['1', '0'] : ['FROZEN', 'THAWED'];
  const isFrozen = async (): Promise<boolean> => {
    if (v2) return /^frozen 1$/m.test((await readOrUndefined(join(dir, 'cgroup.events'))) ?? '');
    return ((await readOrUndefined(control)) ?? '').trim() === 'FROZEN';
  };
  const write = async (value: string): Promise<void> => {
    try {
      await writeFile(control, value);
    } catch (err) {
      throw pauseError(what, `write ${value} to its freezer cgroup: ${messageOf(err)}`, err);
    }
  };
  const thaw: Resume = async () => {
    await write(thawedValue);
  };
  await write(frozenValue);
  const deadline = Date.now() + timeoutMs;
  try {
    // v1 reads FREEZING until every task is frozen; v2 says "frozen 1" in cgroup.events.
    while (!(await isFrozen())) {
      if (Date.now() > deadline) throw pauseError(what, `its processes did not freeze within ${timeoutMs} ms`);
      if (!v2) await write(frozenValue); // v1: writing FROZEN again retries tasks that were busy
      await sleep(POLL_MS);
    }
  } catch (err) {
    await thaw();
    throw err;
  }
  return thaw;
}

// ---------------------------------------------------------------------------------------------
// SIGSTOP / SIGCONT

interface ProcStat {
  pid: number;
  ppid: number;
  /** R, S, D, T (stopped), t (traced), Z, X, ... */
  state: string;
  /** Start time in clock ticks since boot: a pid with another start time is another process. */
  start: string;
}

function parseStat(pid: number, text: string): ProcStat | undefined {
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const ppid = Number(fields[1]);
  const start = fields[19];
  if (state === undefined || start === undefined || !Number.isInteger(ppid)) return undefined;
  return { pid, ppid, state, start };
}

function gone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

async function procStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseStat(pid, await readFile(`/proc/${pid}/stat`, 'latin1'));
  } catch (err) {
    if (gone(err)) return undefined;
    throw err;
  }
}

async function pidNamespace(pid: number): Promise<string | undefined> {
  try {
    return await readlink(`/proc/${pid}/ns/pid`);
  } catch (err) {
    // EACCES: a process of a user namespace above ours (a sandbox's init), so none of the
    // container's: those are our children's, which root may always inspect.
    if (gone(err) || (err as NodeJS.ErrnoException).code === 'EACCES') return undefined;
    throw err;
  }
}

/** The container's processes now: in the init's PID namespace, or descendants of one that is. */
async function containerProcesses(ns: string): Promise<Map<number, ProcStat>> {
  const all = new Map<number, ProcStat>();
  const members = new Map<number, ProcStat>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = await procStat(pid);
    if (st === undefined) continue;
    all.set(pid, st);
    if ((await pidNamespace(pid)) === ns) members.set(pid, st);
  }
  // Descendants (nested PID namespaces): parents first is not guaranteed, so repeat until stable.
  for (let grew = true; grew; ) {
    grew = false;
    for (const st of all.values()) {
      if (!members.has(st.pid) && members.has(st.ppid)) {
        members.set(st.pid, st);
        grew = true;
      }
    }
  }
  return members;
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if (gone(err)) return false; // it exited meanwhile: nothing to stop or resume
    throw err;
  }
}

const STOPPED = new Set(['T', 't', 'Z', 'X']);

async function stopProcesses(initPid: number, what: string, timeoutMs: number): Promise<Resume> {
  const ns = await pidNamespace(initPid);
  if (ns === undefined) throw pauseError(what, 'it is not running');
  // A process of ferry's own namespace is no container: stopping "its" namespace would stop the host.
  if (ns === (await pidNamespace(process.pid))) throw pauseError(what, `pid ${initPid} is not in a PID namespace of its own`);
  /** pid -> start time of the processes we stopped (and so must continue). */
  const stopped = new Map<number, string>();
  /**
   * Every process looked at: stopped by us, or already stopped (the container's own job control:
   * left as it was, never continued by us), or a zombie.
   */
  const handled = new Map<number, string>();
  const resume: Resume = async () => {
    for (const [pid, start] of stopped) {
      const now = await procStat(pid);
      if (now !== undefined && now.start === start) signal(pid, 'SIGCONT');
    }
  };
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const members = await containerProcesses(ns);
      const fresh = [...members.values()].filter((p) => handled.get(p.pid) !== p.start);
      if (fresh.length === 0) break;
      for (const p of fresh) {
        handled.set(p.pid, p.start);
        if (STOPPED.has(p.state)) continue;
        if (signal(p.pid, 'SIGSTOP')) stopped.set(p.pid, p.start);
      }
      // Wait for each to be stopped (a process in uninterruptible sleep stops when it wakes).
      for (const p of fresh) {
        if (stopped.get(p.pid) !== p.start) continue;
        for (;;) {
          const now = await procStat(p.pid);
          if (now === undefined || now.start !== p.start || STOPPED.has(now.state)) break;
          if (Date.now() > deadline) throw pauseError(what, `process ${p.pid} did not stop within ${timeoutMs} ms (state ${now.state})`);
          await sleep(POLL_MS);
        }
      }
    }
  } catch (err) {
    await resume();
    throw err;
  }
  return resume;
}
