import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { finished, pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { FerryError, isFerryError, messageOf } from '../errors.js';
import { digestAlgorithm, digestHex, digestOf, isDigest, type Digest } from '../oci/digest.js';
import { syncDir } from '../io/atomic-file.js';
import { nativeFs } from '../io/native.js';
import { VerifyDigest } from '../io/verify-digest.js';
import type { StoreLock } from './lock.js';
import { ownedName } from './owner.js';
import { isNoSpace, noSpaceError } from './space.js';

export interface IngestOptions {
  signal?: AbortSignal;
  /** Names the blob in errors ("manifest of docker.io/library/redis:7"). */
  what?: string;
}

export interface IngestResult {
  digest: Digest;
  /** Bytes written to the store (0 when it was present already). */
  written: number;
  existed: boolean;
}

/**
 * The content store: `blobs/<algorithm>/<hex>`, each file named by the digest of its bytes.
 * A write is an ingestion (containerd): bytes go to a temp file in tmp/, size and digest are
 * verified while streaming, the file is fsynced, renamed into place under the store lock, and
 * the directory fsynced. A failed or refused ingestion leaves nothing behind.
 */
export class BlobStore {
  readonly dir: string;
  private readonly tmpDir: string;
  private readonly lock: StoreLock;
  /**
   * While > 0 (an import holds a lease, see Store.lease), a verified blob stays in its tmp/ file
   * (found there by path, has, open) and syncPending makes all of them durable with one syncfs,
   * renames them into blobs/ and fsyncs the directory once, before any ref names them: instead of
   * two fsyncs per blob. A crash before that leaves tmp/ entries, swept at the next open. gc
   * does not run while a lease exists, so these renames need not hold the store lock.
   */
  deferSyncs = 0;
  private readonly staged = new Map<Digest, string>();

  constructor(root: string, lock: StoreLock) {
    this.dir = join(root, 'blobs');
    this.tmpDir = join(root, 'tmp');
    this.lock = lock;
  }

  /** Where the blob's bytes are: blobs/<alg>/<hex>, or its tmp/ file while staged (see deferSyncs). */
  path(digest: Digest): string {
    return this.staged.get(digest) ?? join(this.dir, digestAlgorithm(digest), digestHex(digest));
  }

  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      const s = await stat(this.path(digest));
      return { size: s.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  /** The blob's bytes (not re-verified: fsck does that). NOT_FOUND when absent. */
  async open(digest: Digest): Promise<Readable> {
    const path = this.path(digest);
    const handle = await open(path, 'r').catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new FerryError('NOT_FOUND', `blob ${digest} is not in the store`, { hint: 'import the image again, or run ferry fsck' });
      }
      throw err;
    });
    return handle.createReadStream();
  }

  /** A small blob (manifest, config) read whole, checked against its digest. */
  async read(digest: Digest, maxBytes = 4 * 1024 * 1024): Promise<Buffer> {
    const st = await this.stat(digest);
    if (st === undefined) throw new FerryError('NOT_FOUND', `blob ${digest} is not in the store`, { hint: 'import the image again, or run ferry fsck' });
    if (st.size > maxBytes) throw new FerryError('STORE_ERROR', `blob ${digest}: ${st.size} bytes is over the ${maxBytes}-byte limit for this read`);
    const bytes = await readFile(this.path(digest));
    if (digestOf(bytes, digestAlgorithm(digest)) !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `blob ${digest} in the store is corrupt: its bytes hash differently`, { hint: 'run ferry fsck --repair, then import the image again' });
    }
    return bytes;
  }

  /**
   * Store a stream as the blob `digest`, verifying size (when given) and digest. When the blob is
   * present already, the stream is drained (a bundle reader needs its entry consumed).
   */
  async ingest(stream: Readable, digest: Digest, size: number | undefined, options: IngestOptions = {}): Promise<IngestResult> {
    const what = options.what ?? `blob ${digest}`;
    if (await this.has(digest)) {
      stream.resume();
      await finished(stream);
      return { digest, written: 0, existed: true };
    }
    const tmp = join(this.tmpDir, ownedName('blob'));
    let written = 0;
    try {
      const handle = await open(tmp, 'wx', 0o644);
      try {
        const verify = new VerifyDigest(digest, size === undefined ? { what } : { size, what });
        await pipeline(
          stream,
          verify,
          async (source: AsyncIterable<Buffer>) => {
            for await (const chunk of source) {
              let offset = 0;
              while (offset < chunk.length) offset += (await handle.write(chunk, offset, chunk.length - offset)).bytesWritten;
              written += chunk.length;
            }
          },
          options.signal === undefined ? {} : { signal: options.signal },
        );
        if (this.deferSyncs === 0) await handle.sync();
      } finally {
        await handle.close();
      }
      const existed = this.deferSyncs > 0 ? await this.stage(tmp, digest) : await this.commit(tmp, digest);
      return { digest, written: existed ? 0 : written, existed };
    } catch (err) {
      await rm(tmp, { force: true });
      if (isNoSpace(err)) throw noSpaceError(`store ${what}`, this.dir, err);
      if (isFerryError(err)) throw err;
      throw new FerryError('IO_ERROR', `store ${what}: ${messageOf(err)}`, { cause: err });
    }
  }

  /** Store bytes held in memory (manifests, configs); the digest is computed and checked. */
  async put(bytes: Buffer, digest: Digest, options: IngestOptions = {}): Promise<IngestResult> {
    const actual = digestOf(bytes, digestAlgorithm(digest));
    if (actual !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `store ${options.what ?? `blob ${digest}`}: content hashes to ${actual}`);
    }
    return this.ingest(Readable.from([bytes]), digest, bytes.length, options);
  }

  /** Rename the verified temp file into place; true when another writer got there first. */
  private async commit(tmp: string, digest: Digest): Promise<boolean> {
    const target = this.path(digest);
    const dir = join(this.dir, digestAlgorithm(digest));
    return this.lock.with(async () => {
      if (await this.has(digest)) {
        await unlink(tmp);
        return true;
      }
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await rename(tmp, target);
      await syncDir(dir);
      return false;
    });
  }

  /** Keep a verified temp file as the blob until syncPending; true when the blob was there already. */
  private async stage(tmp: string, digest: Digest): Promise<boolean> {
    if (await this.has(digest)) {
      await unlink(tmp);
      return true;
    }
    this.staged.set(digest, tmp);
    return false;
  }

  /** Commit the staged blobs (see deferSyncs): one syncfs, the renames, one fsync per directory. */
  async syncPending(): Promise<void> {
    const batch = [...this.staged];
    if (batch.length === 0) return;
    try {
      nativeFs().syncfs(this.tmpDir);
      const dirs = new Set<string>();
      for (const [digest, tmp] of batch) {
        const dir = join(this.dir, digestAlgorithm(digest));
        if (!dirs.has(dir)) await mkdir(dir, { recursive: true, mode: 0o700 });
        dirs.add(dir);
        // Another importer may have put the same bytes there meanwhile: replacing them is harmless.
        await rename(tmp, join(dir, digestHex(digest)));
        this.staged.delete(digest);
      }
      for (const dir of dirs) await syncDir(dir);
    } catch (err) {
      if (isNoSpace(err)) throw noSpaceError('store blobs', this.dir, err);
      throw err;
    }
  }

  /** Drop the staged blobs (a commit that failed): their temp files are removed. */
  async discardPending(): Promise<void> {
    for (const [digest, tmp] of [...this.staged]) {
      await rm(tmp, { force: true });
      this.staged.delete(digest);
    }
  }

  /** Remove a blob (callers decide it is unreferenced, under the lock). */
  async delete(digest: Digest): Promise<number> {
    const st = await this.stat(digest);
    if (st === undefined) return 0;
    await rm(this.path(digest), { force: true });
    return st.size;
  }

  /** Every blob digest in the store; stray files are reported by fsck, not listed. */
  async list(): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const algorithm of await readdirOrEmpty(this.dir)) {
      for (const hex of await readdirOrEmpty(join(this.dir, algorithm))) {
        const d = `${algorithm}:${hex}`;
        if (isDigest(d)) out.push(d);
      }
    }
    return out.sort();
  }

  /** Files under blobs/ that are not named like a digest. */
  async strays(): Promise<string[]> {
    const out: string[] = [];
    for (const algorithm of await readdirOrEmpty(this.dir)) {
      for (const hex of await readdirOrEmpty(join(this.dir, algorithm))) {
        if (!isDigest(`${algorithm}:${hex}`)) out.push(join(this.dir, algorithm, hex));
      }
    }
    return out;
  }

  /** Hash a stored blob's bytes: its real digest. */
  async verify(digest: Digest): Promise<boolean> {
    const verify = new VerifyDigest(digest);
    try {
      await pipeline(createReadStream(this.path(digest)), verify, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) void chunk;
      });
      return true;
    } catch (err) {
      if (isFerryError(err, 'DIGEST_MISMATCH')) return false;
      throw err;
    }
  }
}

export async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
