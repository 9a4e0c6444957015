import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { open, readFile, stat, unlink } from '../io/fs-promises.js';
import { FerryError, messageOf } from '../errors.js';
import { isOwnerAlive, ownerToken } from './owner.js';

/**
 * The store lock: every change to what others can see (renames into blobs/ and layers/, refs.json,
 * deletions) happens while holding it, so concurrent ferry processes never corrupt the store.
 *
 * Node has no flock, so this is an O_EXCL lock file holding the owner's `<pid>.<start time>`.
 * A lock whose owner is dead is stale and taken over; breaking it happens under a second
 * short-lived `lock.break` file and only after re-reading that the stale owner is still the
 * holder, so two processes never both break and both hold it. Waiting backs off to 100 ms.
 *
 * The lock is held only for short critical sections (a commit rename, a refs update), never for
 * a whole import: two imports into one store run side by side and both succeed; if both unpack the
 * same layer, the first rename wins and the second discards its copy.
 *
 * Taking and releasing it are synchronous calls: an import takes it once per layer, and the
 * thread-pool round trips of the async twins (open, write, close; read, unlink) cost more than
 * the syscalls themselves on a busy machine. Waiting stays asynchronous.
 */
const BREAK_STALE_MS = 10_000;
const EMPTY_GRACE_MS = 5_000;

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

export class StoreLock {
  private readonly path: string;
  private readonly timeoutMs: number;
  /** In-process queue: the file lock cannot tell two async tasks of one process apart. */
  private tail: Promise<void> = Promise.resolve();

  constructor(path: string, timeoutMs = 120_000) {
    this.path = path;
    this.timeoutMs = timeoutMs;
  }

  /** Run `fn` holding the lock; always released, also when `fn` throws. */
  async with<T>(fn: () => Promise<T>): Promise<T> {
    let releaseQueue!: () => void;
    const previous = this.tail;
    this.tail = new Promise<void>((resolve) => {
      releaseQueue = resolve;
    });
    await previous;
    try {
      await this.acquire();
      try {
        return await fn();
      } finally {
        await this.release();
      }
    } finally {
      releaseQueue();
    }
  }

  private async acquire(): Promise<void> {
    const token = `${ownerToken()}\n`;
    const deadline = Date.now() + this.timeoutMs;
    let delay = 2;
    for (;;) {
      try {
        const fd = openSync(this.path, 'wx', 0o644);
        try {
          writeSync(fd, token);
        } finally {
          closeSync(fd);
        }
        return;
      } catch (err) {
        if (errno(err) !== 'EEXIST') {
          throw new FerryError('STORE_ERROR', `lock store (${this.path}): ${messageOf(err)}`, { cause: err });
        }
      }
      const holder = await this.holder();
      if (holder !== undefined && holder.stale) {
        await this.breakStale(holder.content);
        continue;
      }
      if (Date.now() > deadline) {
        throw new FerryError('IN_USE', `lock store (${this.path}): held by process ${holder?.content.split('.')[0] ?? '?'} for more than ${Math.round(this.timeoutMs / 1000)} s`, {
          hint: 'another ferry command is changing the store; wait for it, or remove the lock file if that process is hung',
        });
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
  }

  /** The current holder, or undefined when the lock vanished meanwhile. */
  private async holder(): Promise<{ content: string; stale: boolean } | undefined> {
    let content: string;
    try {
      content = (await readFile(this.path, 'utf8')).trim();
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw err;
    }
    if (content === '') {
      // Created but not yet written, or the writer died right there.
      const age = await this.age(this.path);
      return { content, stale: age !== undefined && age > EMPTY_GRACE_MS };
    }
    return { content, stale: !isOwnerAlive(content) };
  }

  private async age(path: string): Promise<number | undefined> {
    try {
      return Date.now() - (await stat(path)).mtimeMs;
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  private async breakStale(staleContent: string): Promise<void> {
    const breakPath = `${this.path}.break`;
    try {
      const handle = await open(breakPath, 'wx', 0o644);
      await handle.close();
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw err;
      // Another process is breaking it; a break file left by a dead breaker expires.
      const age = await this.age(breakPath);
      if (age !== undefined && age > BREAK_STALE_MS) await unlinkIfPresent(breakPath);
      await sleep(5);
      return;
    }
    try {
      const now = await this.holder();
      if (now !== undefined && now.content === staleContent && now.stale) await unlinkIfPresent(this.path);
    } finally {
      await unlinkIfPresent(breakPath);
    }
  }

  private async release(): Promise<void> {
    // Only remove our own lock (a stale-breaker may, in a pathological case, have taken it).
    let content: string;
    try {
      content = readFileSync(this.path, 'utf8').trim();
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      return;
    }
    if (content !== ownerToken()) return;
    try {
      unlinkSync(this.path);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
  }
}

async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}
