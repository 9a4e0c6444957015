import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic-file.js';
import { isDigest, type Digest } from '../oci/digest.js';

/**
 * The build cache, as data under the store root: `build-cache/<key>.json`, one file per step,
 * written atomically. A step's key covers its parent's key, the instruction after expansion,
 * the build args and environment it sees and the content of every file it reads. The layer it
 * names lives in the store like any other and goes with `ferry prune` (which also empties this
 * directory); an entry whose layer is gone is a miss.
 */
export interface CacheEntry {
  /** The history entry's time, so a fully cached build gives the same image. */
  created: string;
  layer?: { diffId: Digest; digest: Digest; size: number; mediaType: string };
}

export const BUILD_CACHE_DIR = 'build-cache';

export class BuildCache {
  private readonly dir: string;
  constructor(root: string) {
    this.dir = join(root, BUILD_CACHE_DIR);
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.dir, `${key}.json`), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      // A damaged entry is a miss; the step runs again and rewrites it.
      return undefined;
    }
    if (typeof v !== 'object' || v === null) return undefined;
    const e = v as Partial<CacheEntry>;
    if (typeof e.created !== 'string') return undefined;
    const l = e.layer;
    if (l !== undefined && (!isDigest(String(l.diffId)) || !isDigest(String(l.digest)) || typeof l.size !== 'number' || typeof l.mediaType !== 'string')) return undefined;
    return e as CacheEntry;
  }

  async put(key: string, entry: CacheEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(this.dir, `${key}.json`), `${JSON.stringify(entry)}\n`, 0o600);
  }
}
