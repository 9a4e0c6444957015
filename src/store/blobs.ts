import { createReadStream, readFileSync, readdirSync, statSync } from 'node:fs';
import { open, rm } from '../io/fs-promises.js';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { digestAlgorithm, digestHex, isDigest, type Digest } from '../oci/digest.js';
import { IngestBatch } from '../io/atomic-file.js';
import { nodeStreamPromises } from '../io/builtins.js';
import { ingestBytes as ingestBytesInto, ingestFile, type Ingested, type IngestOptions as FileIngestOptions } from '../io/ingest.js';
import { digestOfBuffer } from '../io/native.js';
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
 * A write is an ingestion (io's ingestFile): bytes go to a temp file in tmp/, size and digest are
 * verified while streaming, the file is fsynced, renamed into place under the store lock, and
 * the directory fsynced. A failed or refused ingestion leaves nothing behind.
 */
export class BlobStore {
  readonly dir: string;
  private readonly tmpDir: string;
  private readonly lock: StoreLock;
  /**
   * While > 0 (an import holds a lease, see Store.lease), a verified blob stays in its tmp/ file
   * (found there by path, has, open; io's IngestBatch) and syncPending makes all of them durable
   * with one syncfs, renames them into blobs/ and fsyncs the directory once, before any ref names
   * them: instead of two fsyncs per blob. A crash before that leaves tmp/ entries, swept at the next open. gc
   * does not run while a lease exists, so these renames need not hold the store lock.
   */
  deferSyncs = 0;
  private readonly batch = new IngestBatch();

  constructor(root: string, lock: StoreLock) {
    this.dir = join(root, 'blobs');
    this.tmpDir = join(root, 'tmp');
    this.lock = lock;
  }

  /** Where the blob's bytes are: blobs/<alg>/<hex>, or its tmp/ file while staged (see deferSyncs). */
  path(digest: Digest): string {
    const final = this.finalPath(digest);
    return this.batch.stagedAt(final) ?? final;
  }

  private finalPath(digest: Digest): string {
    return join(this.dir, digestAlgorithm(digest), digestHex(digest));
  }

  /**
   * Synchronous, as the layer store's meta: one stat, where the thread-pool round trip of an async
   * one costs more than the call (once per config of an import of hundreds of images).
   */
  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      const s = statSync(this.path(digest));
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
    // Synchronous: a few small files per command, each async read four thread-pool round trips.
    const bytes = readFileSync(this.path(digest));
    if (digestOfBuffer(bytes, digestAlgorithm(digest)) !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `blob ${digest} in the store is corrupt: its bytes hash differently`, { hint: 'run ferry fsck --repair, then import the image again' });
    }
    return bytes;
  }

  /**
   * Store a stream as the blob `digest`, verifying size (when given) and digest (io's ingestFile).
   * When the blob is present already, the stream is drained (a bundle reader needs its entry consumed).
   */
  async ingest(stream: Readable, digest: Digest, size: number | undefined, options: IngestOptions = {}): Promise<IngestResult> {
    const what = options.what ?? `blob ${digest}`;
    return this.ingesting(what, () =>
      ingestFile(this.finalPath(digest), stream, { ...this.ingestOptions(digest, what, options), ...(size === undefined ? {} : { size }) }),
    );
  }

  /**
   * Store bytes held in memory (manifests, configs, indexes), checked against `digest` first: the
   * same ingestion as `ingest` in one call (io's ingestBytes); staged, one synchronous write of the
   * temp file instead of a stream's six or so thread-pool round trips.
   */
  async ingestBytes(bytes: Buffer, digest: Digest, options: IngestOptions = {}): Promise<IngestResult> {
    const what = options.what ?? `blob ${digest}`;
    return this.ingesting(what, () => ingestBytesInto(this.finalPath(digest), bytes, this.ingestOptions(digest, what, options)));
  }

  private ingestOptions(digest: Digest, what: string, options: IngestOptions): FileIngestOptions & { digest: Digest } {
    const batch = this.deferSyncs > 0 ? this.batch : undefined;
    return {
      digest,
      what,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      tmp: join(this.tmpDir, ownedName('blob')),
      ifExists: 'keep',
      dirMode: 0o700,
      // Committed alone, the rename is made under the store lock (gc takes it); staged, the
      // store's lease keeps gc away and syncPending renames.
      ...(batch === undefined ? { renameUnder: (commit) => this.lock.with(commit) } : { batch }),
    };
  }

  private async ingesting(what: string, ingest: () => Promise<Ingested>): Promise<IngestResult> {
    try {
      const r = await ingest();
      return { digest: r.digest, written: r.existed ? 0 : r.size, existed: r.existed };
    } catch (err) {
      if (isFerryError(err, 'NO_SPACE')) throw noSpaceError(`store ${what}`, this.dir, err.cause);
      if (isNoSpace(err)) throw noSpaceError(`store ${what}`, this.dir, err);
      throw err;
    }
  }

  /** Commit the staged blobs (see deferSyncs): one syncfs, the renames, one fsync per directory. */
  async syncPending(): Promise<void> {
    try {
      await this.batch.commit();
    } catch (err) {
      if (isFerryError(err, 'NO_SPACE')) throw noSpaceError('store blobs', this.dir, err.cause);
      throw err;
    }
  }

  /** Drop the staged blobs (a commit that failed): their temp files are removed. */
  async discardPending(): Promise<void> {
    await this.batch.discard();
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
    const { VerifyDigest } = await import('../io/verify-digest.js');
    const verify = new VerifyDigest(digest);
    try {
      await nodeStreamPromises().pipeline(createReadStream(this.path(digest)), verify, async (source: AsyncIterable<Buffer>) => {
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
    return readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
