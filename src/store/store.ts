import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { open, readdir, rm, unlink } from '../io/fs-promises.js';
import { isAbsolute, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { BlobStore, readdirOrEmpty, type IngestOptions, type IngestResult } from './blobs.js';
import { LayerStore, shortLinkOf, type UnpackLayerOptions, type UnpackLayerResult } from './layers.js';
import { StoreLock } from './lock.js';
import { isOwnerAlive, ownedName, ownerOf } from './owner.js';
import { RefStore, type RefEntry } from './refs.js';

/**
 * The store on the air-gapped host (DESIGN "Store"):
 *   blobs/sha256/<hex>  layers/<chainId hex>/{diff,meta.json}  l/<short>  refs.json
 *   containers/<id>/    tmp/  lock
 */
export interface StoreRootOptions {
  /** --root */
  root?: string;
  env?: NodeJS.ProcessEnv;
  uid?: number;
}

/** `--root`, else $FERRY_ROOT, else /var/lib/ferry for root and $XDG_DATA_HOME/ferry otherwise. */
export function resolveStoreRoot(options: StoreRootOptions = {}): string {
  const env = options.env ?? process.env;
  const explicit = options.root ?? (env.FERRY_ROOT !== undefined && env.FERRY_ROOT !== '' ? env.FERRY_ROOT : undefined);
  if (explicit !== undefined) return resolve(explicit);
  const uid = options.uid ?? (typeof process.getuid === 'function' ? process.getuid() : -1);
  if (uid === 0) return '/var/lib/ferry';
  const xdg = env.XDG_DATA_HOME !== undefined && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return join(xdg, 'ferry');
}

export interface OpenStoreOptions extends StoreRootOptions {
  /** Do not create anything nor sweep tmp/ (images, inspect, fsck without --repair). */
  readOnly?: boolean;
  /** How long to wait for the lock before IN_USE. */
  lockTimeoutMs?: number;
}

/** A live import's mark: gc refuses to run while one exists (its blobs have no ref yet). */
export interface Lease {
  release(): Promise<void>;
}

export class Store {
  readonly root: string;
  readonly lock: StoreLock;
  readonly blobs: BlobStore;
  readonly layers: LayerStore;
  readonly refs: RefStore;
  readonly tmpDir: string;
  readonly containersDir: string;

  constructor(root: string, lockTimeoutMs?: number) {
    this.root = root;
    this.lock = new StoreLock(join(root, 'lock'), lockTimeoutMs);
    this.blobs = new BlobStore(root, this.lock);
    this.layers = new LayerStore(root, this.lock);
    this.refs = new RefStore(root, this.lock);
    this.tmpDir = join(root, 'tmp');
    this.containersDir = join(root, 'containers');
  }

  /** Store one blob from a stream, verified (see BlobStore.ingest). */
  ingestBlob(stream: Readable, digest: Digest, size: number | undefined, options?: IngestOptions): Promise<IngestResult> {
    return this.blobs.ingest(stream, digest, size, options);
  }

  /** Unpack one layer tar on top of its parent, verified (see LayerStore.unpack). */
  unpackLayer(tar: Readable, expectedDiffId: Digest, parentChainId: Digest | undefined, options?: UnpackLayerOptions): Promise<UnpackLayerResult> {
    return this.layers.unpack(tar, expectedDiffId, parentChainId, options);
  }

  /** Name an image: the last step of an import (see setRefs). */
  async setRef(entry: Omit<RefEntry, 'updated'>): Promise<void> {
    await this.setRefs([entry]);
  }

  /**
   * Name several images in one atomic step (see RefStore.setMany). What a lease deferred is made
   * durable in the same hold of the lock, after the new refs.json is written to tmp/ and before
   * it replaces the old one: the syncfs of the staged blobs covers it too.
   */
  async setRefs(entries: ReadonlyArray<Omit<RefEntry, 'updated'>>): Promise<void> {
    await this.refs.setMany(entries, () => this.flush());
  }

  /**
   * Make durable what a lease deferred: staged blobs committed (one syncfs), the directory
   * fsyncs of layers/ and l/. Always before a ref is written, so no name points at anything a
   * crash could take back. Needs no store lock (setRefs calls it holding it).
   */
  async flush(): Promise<void> {
    await this.blobs.syncPending();
    await this.layers.syncPending();
  }

  /**
   * Mark an import in progress (tmp/<owner>-lease), created under the lock so gc sees it. While
   * held, layers and blobs batch their durability work (see LayerStore.deferDirSyncs and
   * BlobStore.deferSyncs); setRef and release flush it. A flush that fails at release drops
   * what is still staged and throws.
   */
  async lease(): Promise<Lease> {
    const path = join(this.tmpDir, ownedName('lease'));
    await this.lock.with(async () => {
      const handle = await open(path, 'wx', 0o600);
      await handle.close();
    });
    this.layers.deferDirSyncs++;
    this.blobs.deferSyncs++;
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        this.layers.deferDirSyncs--;
        this.blobs.deferSyncs--;
        try {
          // What was verified before a failure is kept, as it was when each piece was synced alone.
          await this.flush();
        } catch (err) {
          await this.blobs.discardPending();
          throw err;
        } finally {
          await unlink(path).catch((err: unknown) => {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          });
        }
      },
    };
  }

  /** Leases whose owner is still running. */
  async liveLeases(): Promise<string[]> {
    const names = await readdir(this.tmpDir).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names.filter((n) => n.endsWith('-lease') && isOwnerAlive(ownerOf(n) ?? ''));
  }

  /** Entries in tmp/ left by processes that are gone (crashed imports). */
  async deadTmpEntries(): Promise<string[]> {
    const names = await readdirOrEmpty(this.tmpDir);
    return names.filter((n) => {
      const owner = ownerOf(n);
      return owner === undefined || !isOwnerAlive(owner);
    });
  }

  /** Remove what crashed processes left in tmp/ (staging dirs, partial blobs, leases). */
  async sweepTmp(): Promise<string[]> {
    const dead = await this.deadTmpEntries();
    for (const name of dead) await rm(join(this.tmpDir, name), { recursive: true, force: true });
    return dead;
  }

  /**
   * Mend l/ after a crash: a layer is renamed into layers/ and then linked, and removed the other
   * way round, so a process killed in between leaves a layer without its link or a link without
   * its layer. A quick look without the lock; only a mismatch takes it (a live commit may be
   * between its two steps) and fixes both kinds.
   */
  async mendLinks(): Promise<void> {
    const ids = (await this.layers.ids()).filter((hex) => isDigest(`sha256:${hex}`));
    const want = new Set(ids.map((hex) => shortLinkOf(`sha256:${hex}` as Digest)));
    const have = await readdirOrEmpty(this.layers.linkDir);
    if (have.length === want.size && have.every((name) => want.has(name))) return;
    // gc.js (and the compressed cache, zlib and zstd it brings) loads only here: not on every start.
    const { danglingLinks } = await import('./gc.js');
    await this.lock.with(async () => {
      for (const name of await danglingLinks(this)) await rm(join(this.layers.linkDir, name), { force: true });
      const present = new Set(await readdirOrEmpty(this.layers.linkDir));
      for (const meta of await this.layers.list()) if (!present.has(meta.link)) await this.layers.ensureLink(meta.chainId, meta.link);
    });
  }
}

/** Open (and, unless read-only, create, sweep tmp/ and mend l/) the store. */
export async function openStore(options: OpenStoreOptions = {}): Promise<Store> {
  const root = resolveStoreRoot(options);
  const store = new Store(root, options.lockTimeoutMs);
  if (options.readOnly) return store;
  try {
    // layers/ holds setuid files and devices of images: private to root (or the rootless user).
    // Synchronous: every command (a container start too) opens the store, and an async mkdir is a
    // thread-pool round trip that costs more than the syscall on a busy machine.
    mkdirSync(root, { recursive: true, mode: 0o700 });
    for (const dir of ['blobs', 'layers', 'l', 'tmp', 'containers']) mkdirSync(join(root, dir), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new FerryError('STORE_ERROR', `open store ${root}: ${messageOf(err)}`, {
      cause: err,
      hint: 'choose a writable place with --root or $FERRY_ROOT',
    });
  }
  await Promise.all([store.sweepTmp(), store.mendLinks()]);
  return store;
}
