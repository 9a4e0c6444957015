import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import { Ingestion, IngestBatch, syncDir, tempPathFor, writeFileAtomic } from '../io/atomic-file.js';
import { isToolFileName } from './format.js';

/**
 * Volumes: one bundle stream cut into `NAME.001`, `NAME.002`, ... of at most `split` bytes each,
 * plus `NAME.sha256` in `sha256sum -c` format, so a damaged copy is found per volume with or
 * without ferry. Hashes are computed while writing and checked while reading: no extra pass.
 */

export function volumePath(base: string, n: number): string {
  return `${base}.${String(n).padStart(3, '0')}`;
}

export function checksumPath(base: string): string {
  return `${base}.sha256`;
}

export interface VolumeInfo {
  path: string;
  size: number;
  /** Hex sha256 of the volume, when known (written, or listed in NAME.sha256). */
  sha256?: string;
}

/** A Writable that cuts what it gets into volumes, hashing each, and commits them at the end. */
export class VolumeWriter extends Writable {
  readonly base: string;
  readonly split: number;
  readonly volumes: VolumeInfo[] = [];
  /** Closed volumes, fsynced and staged at their temp names: renamed into place together at the end. */
  private readonly batch = new IngestBatch({ syncEach: true });
  /** The volume being written (io's Ingestion). */
  private file: Ingestion | undefined;
  private hash: Hash | undefined;
  private written = 0;
  /** The write or commit in flight: destroy waits for it, so no file or handle is left behind. */
  private busy: Promise<void> = Promise.resolve();

  /** Files beside the volumes (export --with-ferry) that NAME.sha256 lists too. */
  private readonly companions: ReadonlyArray<{ file: string; sha256: string }>;

  constructor(base: string, split: number, companions: ReadonlyArray<{ file: string; sha256: string }> = []) {
    super({ highWaterMark: 1024 * 1024 });
    if (!Number.isSafeInteger(split) || split < 1) throw new FerryError('USAGE', `invalid volume size ${split}`);
    this.base = base;
    this.split = split;
    this.companions = companions;
  }

  private async openNext(): Promise<void> {
    const n = this.volumes.length + 1;
    if (n > 999) {
      throw new FerryError('USAGE', `split ${this.base}: more than 999 volumes of ${this.split} bytes`, { hint: 'choose a larger --split size' });
    }
    const finalPath = volumePath(this.base, n);
    this.file = await Ingestion.open(tempPathFor(finalPath), 0o644);
    this.hash = createHash('sha256');
    this.written = 0;
    this.volumes.push({ path: finalPath, size: 0 });
  }

  private async closeCurrent(): Promise<void> {
    if (this.file === undefined || this.hash === undefined) return;
    const current = this.volumes[this.volumes.length - 1]!;
    current.size = this.written;
    current.sha256 = this.hash.digest('hex');
    const file = this.file;
    this.file = undefined;
    this.hash = undefined;
    // fsync and close; it stays at its temp name (removed on failure) until commit.
    await file.commit(current.path, { batch: this.batch });
  }

  private async writeChunk(chunk: Buffer): Promise<void> {
    let rest = chunk;
    while (rest.length > 0) {
      if (this.file === undefined || this.written >= this.split) {
        await this.closeCurrent();
        await this.openNext();
      }
      const room = this.split - this.written;
      const part = rest.length <= room ? rest : rest.subarray(0, room);
      await this.file!.write(part);
      this.hash!.update(part);
      this.written += part.length;
      rest = rest.subarray(part.length);
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.busy = this.writeChunk(chunk);
    this.busy.then(
      () => done(),
      (err: unknown) => done(ioError(`write volume ${volumePath(this.base, this.volumes.length)}`, err)),
    );
  }

  override _final(done: (err?: Error | null) => void): void {
    this.busy = this.commit();
    this.busy.then(
      () => done(),
      (err: unknown) => done(err instanceof FerryError ? err : ioError(`finish volumes of ${this.base}`, err)),
    );
  }

  private async commit(): Promise<void> {
    if (this.file === undefined && this.volumes.length === 0) await this.openNext();
    await this.closeCurrent();
    await this.batch.commit();
    const lines = [...this.volumes.map((v) => `${v.sha256!}  ${basename(v.path)}\n`), ...this.companions.map((c) => `${c.sha256}  ${c.file}\n`)].join('');
    await writeFileAtomic(checksumPath(this.base), lines);
    // Volumes left from an earlier, longer bundle of the same name would be read as part of this one.
    for (let n = this.volumes.length + 1; n <= 999; n++) {
      const stale = volumePath(this.base, n);
      try {
        await rm(stale);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
        throw err;
      }
    }
    await syncDir(dirname(this.base));
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const cleanup = async (): Promise<void> => {
      // Its failure, if any, already went to the write callback; here only its end matters.
      await this.busy.then(
        () => undefined,
        () => undefined,
      );
      const file = this.file;
      this.file = undefined;
      try {
        await file?.abort();
      } finally {
        await this.batch.discard();
      }
    };
    cleanup().then(
      () => done(err),
      (e: unknown) => done(err ?? (e as Error)),
    );
  }
}

function ioError(what: string, err: unknown): FerryError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC') {
    return new FerryError('NO_SPACE', `${what}: no space left on device`, { cause: err, hint: 'free space, or write volumes with --split to a larger medium' });
  }
  return new FerryError('IO_ERROR', `${what}: ${messageOf(err)}`, { cause: err });
}

/** Parse `sha256sum` output: "<hex>  <name>" or "<hex> *<name>" per line. */
export function parseChecksumFile(text: string, source: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const m = /^([a-f0-9]{64}) [ *](.+)$/.exec(line.trim());
    if (!m) throw new FerryError('BUNDLE_INVALID', `${source}: line ${i + 1} is not "<sha256>  <file>"`);
    out.set(m[2]!, m[1]!);
  }
  return out;
}

/** Where a bundle's bytes are: one file, or volumes found from the base name or any volume. */
export type BundleLocation =
  | { kind: 'file'; path: string; size: number }
  | {
      kind: 'volumes';
      base: string;
      volumes: VolumeInfo[];
      checksumFile: string | undefined;
      /** Other files NAME.sha256 lists (the carried ferry executable): name -> hex sha256. */
      companions?: Map<string, string>;
    };

async function fileSize(path: string): Promise<number | undefined> {
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new FerryError('USAGE', `bundle ${path}: not a regular file`, { hint: 'give the bundle file, or use - to read it from stdin' });
    return s.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Find a bundle: `b.tar.zst` (a file, or the base name of volumes `b.tar.zst.001`...) or any
 * volume `b.tar.zst.003`. With a `.sha256` file, its list is the authority on which volumes exist.
 */
export async function locateBundle(path: string): Promise<BundleLocation> {
  const volumeMatch = /^(.*)\.(\d{3})$/.exec(path);
  if (volumeMatch === null) {
    const size = await fileSize(path);
    if (size !== undefined) return { kind: 'file', path, size };
  }
  const base = volumeMatch === null ? path : volumeMatch[1]!;
  const sumFile = checksumPath(base);
  let listed: Map<string, string> | undefined;
  try {
    listed = parseChecksumFile(await readFile(sumFile, 'utf8'), sumFile);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const volumes: VolumeInfo[] = [];
  const companions = new Map<string, string>();
  if (listed !== undefined) {
    // Plain names that are no volume of any bundle are files carried beside it (export --with-ferry).
    for (const [name, sha] of listed) {
      if (!/\.\d{3}$/.test(name) && isToolFileName(name)) {
        companions.set(name, sha);
        listed.delete(name);
      }
    }
    const names = [...listed.keys()].sort();
    for (const [i, name] of names.entries()) {
      const expected = basename(volumePath(base, i + 1));
      if (name !== expected) {
        throw new FerryError('BUNDLE_INVALID', `${sumFile}: lists "${name}" where "${expected}" was expected`, {
          hint: 'the checksum file does not belong to these volumes; copy it again with the volumes',
        });
      }
      const p = join(dirname(base), name);
      const size = await fileSize(p);
      if (size === undefined) {
        throw new FerryError('NOT_FOUND', `${p} is missing: volume ${i + 1} of ${names.length}`, {
          hint: `copy every volume (${basename(base)}.001 to ${names.at(-1)}) into ${dirname(base)}`,
        });
      }
      volumes.push({ path: p, size, sha256: listed.get(name)! });
    }
  } else {
    for (let n = 1; n <= 999; n++) {
      const p = volumePath(base, n);
      const size = await fileSize(p);
      if (size === undefined) break;
      volumes.push({ path: p, size });
    }
  }
  if (volumes.length === 0) {
    throw new FerryError('NOT_FOUND', `bundle ${path}: no such file, and no volumes ${basename(base)}.001...`, {
      hint: 'give the bundle file, the base name of its volumes, or its first volume',
    });
  }
  return { kind: 'volumes', base, volumes, checksumFile: listed === undefined ? undefined : sumFile, ...(companions.size > 0 ? { companions } : {}) };
}

export function locationName(location: BundleLocation): string {
  return location.kind === 'file' ? location.path : location.base;
}

export function locationSize(location: BundleLocation): number {
  return location.kind === 'file' ? location.size : location.volumes.reduce((s, v) => s + v.size, 0);
}

export function damagedVolumeError(volume: string, cause?: unknown): FerryError {
  return new FerryError('DIGEST_MISMATCH', `${basename(volume)} is damaged: copy it again`, {
    hint: `its sha256 does not match ${basename(volume).replace(/\.\d{3}$/, '')}.sha256; copy ${volume} from the source medium again`,
    cause,
  });
}

/**
 * The bundle is read in pieces of this size. Each piece is a new buffer, dead once the decoder has
 * its copy, and V8 frees dead buffers only at a collection, which JavaScript allocation brings on,
 * not buffer bytes: read 1 MiB at a time, the seven-image import peaked at 238-248 MB, 128 KiB
 * at a time at 220-227 MB (interleaved runs, same CPU).
 */
const READ_CHUNK = 128 * 1024;

export interface VolumeStream {
  stream: Readable;
  /** The volume being read when the stream stopped (for naming it in errors). */
  current(): VolumeInfo | undefined;
}

/**
 * The bundle's bytes as one stream: the file, or the volumes concatenated. Each volume is
 * hashed as it streams and checked against NAME.sha256 at its end, failing there and naming it.
 */
export function openLocationStream(location: BundleLocation, options: { signal?: AbortSignal } = {}): VolumeStream {
  if (location.kind === 'file') {
    const info: VolumeInfo = { path: location.path, size: location.size };
    return { stream: createReadStream(location.path, { highWaterMark: READ_CHUNK, signal: options.signal }), current: () => info };
  }
  let current: VolumeInfo | undefined;
  async function* chunks(): AsyncGenerator<Buffer> {
    for (const volume of location.kind === 'volumes' ? location.volumes : []) {
      current = volume;
      const hash = volume.sha256 === undefined ? undefined : createHash('sha256');
      let size = 0;
      const file = createReadStream(volume.path, { highWaterMark: READ_CHUNK, signal: options.signal });
      for await (const chunk of file) {
        const b = chunk as Buffer;
        hash?.update(b);
        size += b.length;
        yield b;
      }
      if (hash !== undefined && hash.digest('hex') !== volume.sha256) throw damagedVolumeError(volume.path);
      if (size !== volume.size) {
        throw new FerryError('IO_ERROR', `${volume.path} changed while being read (${size} bytes, expected ${volume.size})`);
      }
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), current: () => current };
}

/** sha256 of one file, hex. */
export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Which volumes do not match their listed sha256 (for naming the damaged one after a failed read). */
export async function damagedVolumes(location: BundleLocation, signal?: AbortSignal): Promise<VolumeInfo[]> {
  if (location.kind !== 'volumes') return [];
  const bad: VolumeInfo[] = [];
  for (const v of location.volumes) {
    if (v.sha256 !== undefined && (await sha256File(v.path, signal)) !== v.sha256) bad.push(v);
  }
  return bad;
}
