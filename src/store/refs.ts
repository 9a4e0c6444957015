import { readFileSync, statSync } from 'node:fs';
import { rename } from '../io/fs-promises.js';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { formatPlatform, normalizePlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { fileStamp } from '../io/file-stamp.js';
import type { StoreLock } from './lock.js';
import { ownedName } from './owner.js';
import { isoTime } from '../io/iso-time.js';

/**
 * Image names in the store: `refs.json`, replaced atomically, written last in an import so a
 * crash leaves either the old name or the new one. One name may have one image per platform
 * (an index imported for amd64 and arm64).
 */
export interface RefEntry {
  /** Normalised reference, `docker.io/library/redis:7` (or `name@sha256:...` without a tag). */
  name: string;
  manifestDigest: Digest;
  mediaType: string;
  platform: Platform;
  /** The index it was resolved from, when it came from one (kept as a blob). */
  indexDigest?: Digest;
  updated: string;
}

interface RefsFile {
  schemaVersion: 1;
  refs: RefEntry[];
}

/** The normalised store name for what a user typed: `redis` -> `docker.io/library/redis:latest`. */
export function refName(text: string): string {
  return formatReference(parseReference(text));
}

function platformKey(p: Platform): string {
  return formatPlatform(normalizePlatform(p));
}

function validEntry(v: unknown): v is RefEntry {
  const e = v as Partial<RefEntry>;
  return (
    typeof e === 'object' && e !== null && typeof e.name === 'string' && typeof e.manifestDigest === 'string' && isDigest(e.manifestDigest) &&
    typeof e.mediaType === 'string' && typeof e.platform === 'object' && e.platform !== null &&
    typeof e.platform.os === 'string' && typeof e.platform.architecture === 'string' &&
    (e.indexDigest === undefined || (typeof e.indexDigest === 'string' && isDigest(e.indexDigest)))
  );
}

export class RefStore {
  readonly path: string;
  private readonly tmpDir: string;
  private readonly lock: StoreLock;

  constructor(root: string, lock: StoreLock) {
    this.path = join(root, 'refs.json');
    this.tmpDir = join(root, 'tmp');
    this.lock = lock;
  }

  /** Written via tmp/, so a crash mid-write leaves a leftover the next open sweeps. */
  private async write(file: RefsFile, beforeRename?: () => Promise<void>): Promise<void> {
    await writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`, 0o644, join(this.tmpDir, ownedName('refs')), beforeRename);
  }

  /**
   * The entries last read, with the stamp refs.json had then. Every write replaces the file by a
   * rename (a new inode), so an unchanged stamp is an unchanged file: a command that looks up N
   * names (an export of N images from the store) reads and checks it once, not N times.
   */
  private cached: { stamp: string; refs: readonly RefEntry[] } | undefined;

  async list(): Promise<RefEntry[]> {
    let text: string;
    let stamp: string;
    try {
      // Taken before the read: a change between the two only costs another read next time.
      stamp = fileStamp(statSync(this.path, { bigint: true }));
      if (this.cached?.stamp === stamp) return [...this.cached.refs];
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      throw new FerryError('STORE_ERROR', `${this.path}: not valid JSON`, { cause: err, hint: 'run ferry fsck --repair' });
    }
    const file = v as Partial<RefsFile>;
    if (typeof file !== 'object' || file === null || file.schemaVersion !== 1 || !Array.isArray(file.refs) || !file.refs.every(validEntry)) {
      throw new FerryError('STORE_ERROR', `${this.path}: not a ferry refs file`, { hint: 'run ferry fsck --repair' });
    }
    // Frozen: the same entries go to every caller until the file changes.
    for (const entry of file.refs) {
      Object.freeze(entry.platform);
      Object.freeze(entry);
    }
    this.cached = { stamp, refs: file.refs };
    return [...file.refs];
  }

  /**
   * The entries for a name: the one matching `platform` when given, else all of them (one per
   * platform). `name` must be normalised (see refName).
   */
  async find(name: string, platform?: Platform): Promise<RefEntry[]> {
    const all = (await this.list()).filter((e) => e.name === name);
    return platform === undefined ? all : all.filter((e) => platformMatches(platform, e.platform));
  }

  /** Add or replace the entry with the same name and platform. */
  async set(entry: Omit<RefEntry, 'updated'>): Promise<void> {
    await this.setMany([entry]);
  }

  /**
   * Add or replace several entries in one atomic rewrite of refs.json: an import of N images
   * writes the file once, not N times (N rewrites of a growing file are quadratic), and its
   * names appear all together or not at all. `beforeRename`: see update.
   */
  async setMany(entries: ReadonlyArray<Omit<RefEntry, 'updated'>>, beforeRename?: () => Promise<void>): Promise<void> {
    if (entries.length === 0) return;
    const updated = isoTime();
    const key = (e: Pick<RefEntry, 'name' | 'platform'>): string => `${e.name}\n${platformKey(e.platform)}`;
    const fresh = new Map<string, RefEntry>();
    for (const entry of entries) {
      const full: RefEntry = { ...entry, platform: normalizePlatform(entry.platform), updated };
      fresh.set(key(full), full);
    }
    await this.update((refs) => [...refs.filter((e) => !fresh.has(key(e))), ...fresh.values()], beforeRename);
  }

  /** Remove a name (all platforms, or one); returns the removed entries. */
  async remove(name: string, platform?: Platform): Promise<RefEntry[]> {
    let removed: RefEntry[] = [];
    await this.update((refs) => {
      removed = refs.filter((e) => e.name === name && (platform === undefined || platformMatches(platform, e.platform)));
      return refs.filter((e) => !removed.includes(e));
    });
    return removed;
  }

  /** Replace a damaged refs.json with an empty one, keeping the damaged bytes beside it. */
  async reset(): Promise<string> {
    const kept = `${this.path}.damaged-${Date.now()}`;
    await this.lock.with(async () => {
      await rename(this.path, kept);
      await this.write({ schemaVersion: 1, refs: [] });
    });
    return kept;
  }

  /**
   * Read-modify-write under the store lock, written atomically. `beforeRename` runs under the
   * same hold of the lock, after the new file is written to tmp/ and before it replaces refs.json.
   */
  async update(change: (refs: RefEntry[]) => RefEntry[], beforeRename?: () => Promise<void>): Promise<void> {
    await this.lock.with(async () => {
      const next = change(await this.list()).sort((a, b) =>
        a.name === b.name ? platformKey(a.platform).localeCompare(platformKey(b.platform)) : a.name.localeCompare(b.name),
      );
      await this.write({ schemaVersion: 1, refs: next }, beforeRename);
    });
  }
}
