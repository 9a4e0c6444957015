import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FerryError, isFerryError } from '../../src/errors.js';
import { digestHex, digestOf, type Digest } from '../../src/oci/digest.js';
import { IngestBatch, Ingestion } from '../../src/io/atomic-file.js';
import { ingestBytes, ingestFile } from '../../src/io/ingest.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const DATA = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(4000));
const DIGEST = digestOf(DATA);

function chunks(buf: Buffer, size = 4096): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

/** Every name under `d`, recursively: nothing may be left behind, not even a temp file. */
async function tree(d: string): Promise<string[]> {
  return (await readdir(d, { recursive: true })).map(String).sort();
}

async function failure(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir('ingest');
});
afterEach(async () => {
  await removeDir(dir);
});

describe('ingestFile', () => {
  it('sourceVerifies: a source that checks its own digest is not hashed again; its failure at the end still leaves nothing, and the size is still counted', async () => {
    const path = join(dir, 'trusted');
    const r = await ingestFile(path, chunks(DATA), { digest: DIGEST, size: DATA.length, sourceVerifies: true });
    expect(r).toEqual({ path, digest: DIGEST, size: DATA.length, existed: false });
    expect((await readFile(path)).equals(DATA)).toBe(true);
    // The source's own check fails at its end (as an Image's blob() does): nothing is renamed into place.
    const failing = new Readable({
      read() {
        this.push(DATA.subarray(0, 1000));
        this.destroy(new FerryError('DIGEST_MISMATCH', 'damaged on purpose'));
      },
    });
    const err = await failure(ingestFile(join(dir, 'bad'), failing, { digest: DIGEST, sourceVerifies: true }));
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    const long = await failure(ingestFile(join(dir, 'long'), chunks(Buffer.concat([DATA, DATA])), { digest: DIGEST, size: DATA.length, sourceVerifies: true }));
    expect(isFerryError(long, 'SIZE_MISMATCH')).toBe(true);
    expect(await tree(dir)).toEqual(['trusted']);
  });

  it('writes the verified bytes with the mode, reports digest and size, and leaves no temp file', async () => {
    const path = join(dir, 'blob');
    let counted = 0;
    const r = await ingestFile(path, chunks(DATA), { digest: DIGEST, size: DATA.length, mode: 0o600, onBytes: (n) => (counted += n) });
    expect(r).toEqual({ path, digest: DIGEST, size: DATA.length, existed: false });
    expect((await readFile(path)).equals(DATA)).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(counted).toBe(DATA.length);
    expect(await tree(dir)).toEqual(['blob']);
  });

  it('measures what it is not told (sha512 when asked) and makes the missing directory', async () => {
    const path = join(dir, 'a', 'b', 'file');
    const r = await ingestFile(path, chunks(DATA), { algorithm: 'sha512', dirMode: 0o700 });
    expect(r.digest).toBe(digestOf(DATA, 'sha512'));
    expect(r.size).toBe(DATA.length);
    expect((await stat(join(dir, 'a'))).mode & 0o777).toBe(0o700);
    expect(await tree(dir)).toEqual(['a', 'a/b', 'a/b/file']);
  });

  it('a digest mismatch leaves nothing at the path and no temp file; the error names the digest and the path', async () => {
    const path = join(dir, digestHex(DIGEST));
    const tampered = Buffer.from(DATA);
    tampered[100] = tampered[100]! ^ 1;
    const err = await failure(ingestFile(path, chunks(tampered), { digest: DIGEST, size: DATA.length }));
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(err.message).toContain(DIGEST);
    expect(err.message).toContain(path);
    expect(await tree(dir)).toEqual([]);
  });

  it('a size mismatch (too long: at once; too short: at the end) leaves nothing', async () => {
    const path = join(dir, 'blob');
    const long = await failure(ingestFile(path, chunks(DATA), { digest: DIGEST, size: DATA.length - 1 }));
    expect(isFerryError(long, 'SIZE_MISMATCH')).toBe(true);
    expect(long.message).toContain(DIGEST);
    expect(long.message).toContain(path);
    const short = await failure(ingestFile(path, chunks(DATA), { digest: DIGEST, size: DATA.length + 1 }));
    expect(isFerryError(short, 'SIZE_MISMATCH')).toBe(true);
    // Without a digest the size is still checked.
    const measured = await failure(ingestFile(path, chunks(DATA), { size: 10, what: 'layer record' }));
    expect(isFerryError(measured, 'SIZE_MISMATCH')).toBe(true);
    expect(measured.message).toContain('layer record');
    expect(await tree(dir)).toEqual([]);
  });

  it('an abort midway stops the write and leaves nothing', async () => {
    const path = join(dir, 'blob');
    const controller = new AbortController();
    let sent = 0;
    const source = Readable.from(
      (async function* () {
        for (;;) {
          sent++;
          if (sent === 3) controller.abort();
          yield DATA.subarray(0, 4096);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })(),
    );
    const err = await failure(ingestFile(path, source, { digest: DIGEST, signal: controller.signal }));
    expect(err.name).toBe('AbortError');
    expect(sent).toBeLessThan(10);
    expect(await tree(dir)).toEqual([]);
  });

  it('a source that fails before its first byte is read (while the temp file opens) is reported, never thrown as uncaught', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => void uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    try {
      const path = join(dir, 'blob');
      const source = new Readable({ read: () => undefined });
      const ingesting = failure(ingestFile(path, source, { digest: DIGEST }));
      // As an aborted download does: destroyed with its error before ingestFile reads from it.
      source.destroy(Object.assign(new Error('aborted early'), { name: 'AbortError' }));
      const err = await ingesting;
      expect(err.name).toBe('AbortError');
      expect(err.message).toBe('aborted early');
      await new Promise((resolve) => setImmediate(resolve));
      expect(uncaught).toEqual([]);
      expect(await tree(dir)).toEqual([]);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });

  it('a failure before the source is read (no such directory) destroys the source: its connection is released', async () => {
    const source = new Readable({ read: () => undefined });
    const err = await failure(ingestFile(join(dir, 'blob'), source, { digest: DIGEST, tmp: join(dir, 'missing', 'tmp') }));
    expect(err.message).toContain(join(dir, 'missing'));
    expect(source.destroyed).toBe(true);
    expect(await tree(dir)).toEqual([]);
  });

  it('a source that fails midway: its FerryError passes as it is, another error names the path; nothing is left', async () => {
    const path = join(dir, 'blob');
    const failing = (err: Error): Readable =>
      Readable.from(
        (async function* () {
          yield DATA.subarray(0, 4096);
          throw err;
        })(),
      );
    const own = await failure(ingestFile(path, failing(new FerryError('NETWORK_ERROR', 'blob: connection reset')), { digest: DIGEST }));
    expect(isFerryError(own, 'NETWORK_ERROR')).toBe(true);
    const other = await failure(ingestFile(path, failing(new Error('device went away')), { digest: DIGEST }));
    expect(isFerryError(other, 'IO_ERROR')).toBe(true);
    expect(other.message).toContain(path);
    expect(other.message).toContain('device went away');
    expect(await tree(dir)).toEqual([]);
  });

  it.runIf(process.getuid?.() === 0)('a full filesystem is NO_SPACE naming the path, and leaves nothing', async () => {
    const small = join(dir, 'small');
    await mkdir(small);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', small]);
    try {
      const big = Buffer.alloc(1024 * 1024, 7);
      const path = join(small, 'blob');
      const err = await failure(ingestFile(path, chunks(big, 64 * 1024), { digest: digestOf(big) }));
      expect(err).toMatchObject({ code: 'NO_SPACE' });
      expect(err.message).toContain(path);
      expect(await tree(small)).toEqual([]);
    } finally {
      await run('umount', [small]);
    }
  });

  it('an existing target: kept (the source drained, nothing written) or replaced whole', async () => {
    const path = join(dir, 'blob');
    await ingestFile(path, chunks(DATA), { digest: DIGEST });
    const source = chunks(DATA);
    const again = await ingestFile(path, source, { digest: DIGEST, ifExists: 'keep' });
    expect(again).toEqual({ path, digest: DIGEST, size: 0, existed: true });
    expect(source.readableEnded).toBe(true);
    expect((await readFile(path)).equals(DATA)).toBe(true);
    expect(await tree(dir)).toEqual(['blob']);

    const other = join(dir, 'refs');
    await writeFile(other, 'a much longer old content than the new one');
    expect((await ingestFile(other, chunks(Buffer.from('new')))).existed).toBe(false);
    expect(await readFile(other, 'utf8')).toBe('new');
    expect(await tree(dir)).toEqual(['blob', 'refs']);
  });

  it('a target named by its digest lands there once measured; the same bytes again are kept', async () => {
    const blobs = join(dir, 'blobs');
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const at = (d: Digest): string => join(blobs, digestHex(d));
    const r = await ingestFile(at, chunks(DATA), { tmp: join(tmp, 'x'), dirMode: 0o755 });
    expect(r.path).toBe(at(DIGEST));
    expect((await readFile(r.path)).equals(DATA)).toBe(true);
    const again = await ingestFile(at, chunks(DATA), { tmp: join(tmp, 'y'), ifExists: 'keep' });
    expect(again.existed).toBe(true);
    expect(await tree(dir)).toEqual(['blobs', `blobs/${digestHex(DIGEST)}`, 'tmp']);
  });
});

describe('ingestFile into a batch (durable: batch)', () => {
  it('stages verified files at their temp paths until commit: one syncfs, the renames, nothing left in tmp', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const batch = new IngestBatch();
    const other = Buffer.from('another blob');
    const paths = [join(dir, 'blobs', digestHex(DIGEST)), join(dir, 'blobs', digestHex(digestOf(other)))];
    await ingestFile(paths[0]!, chunks(DATA), { digest: DIGEST, tmp: join(tmp, 'a'), batch, ifExists: 'keep', dirMode: 0o700 });
    await ingestFile(paths[1]!, Readable.from([other]), { digest: digestOf(other), tmp: join(tmp, 'b'), batch, ifExists: 'keep', dirMode: 0o700 });
    // The same blob again while staged is found staged: drained, not written twice.
    expect((await ingestFile(paths[0]!, chunks(DATA), { digest: DIGEST, tmp: join(tmp, 'c'), batch, ifExists: 'keep' })).existed).toBe(true);
    expect(batch.size).toBe(2);
    expect(batch.stagedAt(paths[0]!)).toBe(join(tmp, 'a'));
    expect((await readFile(join(tmp, 'a'))).equals(DATA)).toBe(true);
    expect(await tree(join(dir, 'blobs'))).toEqual([]);

    await batch.commit();
    expect(batch.size).toBe(0);
    expect((await readFile(paths[0]!)).equals(DATA)).toBe(true);
    expect(await readFile(paths[1]!, 'utf8')).toBe('another blob');
    expect(await tree(tmp)).toEqual([]);
  });

  it('discard removes what is staged; a refused file is never staged', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const batch = new IngestBatch();
    const path = join(dir, 'blob');
    await ingestFile(path, chunks(DATA), { digest: DIGEST, tmp: join(tmp, 'a'), batch });
    const bad = await failure(ingestFile(join(dir, 'bad'), chunks(DATA.subarray(1)), { digest: DIGEST, tmp: join(tmp, 'b'), batch }));
    expect(isFerryError(bad, 'SIZE_MISMATCH') || isFerryError(bad, 'DIGEST_MISMATCH')).toBe(true);
    expect(batch.size).toBe(1);
    await batch.discard();
    expect(await tree(dir)).toEqual(['tmp']);
  });
});

describe('IngestBatch with syncEach (volumes)', () => {
  it('each file is fsynced as it is staged; all appear together at commit, with no syncfs', async () => {
    const batch = new IngestBatch({ syncEach: true });
    expect(batch.syncEach).toBe(true);
    const targets = [join(dir, 'v.001'), join(dir, 'v.002')];
    for (const [i, target] of targets.entries()) {
      const file = await Ingestion.open(join(dir, `.v.tmp-${i}`));
      await file.write(Buffer.from(`volume ${i + 1}`));
      expect(await file.commit(target, { batch })).toBe(false);
    }
    expect(await tree(dir)).toEqual(['.v.tmp-0', '.v.tmp-1']);
    await batch.commit();
    expect(await tree(dir)).toEqual(['v.001', 'v.002']);
    expect(await readFile(targets[1]!, 'utf8')).toBe('volume 2');
  });

  it('discard removes the staged files: nothing appears', async () => {
    const batch = new IngestBatch({ syncEach: true });
    const file = await Ingestion.open(join(dir, '.v.tmp'));
    await file.write(Buffer.from('volume'));
    await file.commit(join(dir, 'v.001'), { batch });
    await batch.discard();
    expect(await tree(dir)).toEqual([]);
  });
});

describe('Ingestion', () => {
  it('writes at positions (a header patched after its body) and appears only at commit', async () => {
    const path = join(dir, 'archive.tar');
    const file = await Ingestion.open(join(dir, '.archive.tmp'));
    await file.write(Buffer.from('HEAD'));
    await file.write(Buffer.from('body'));
    await file.write(Buffer.from('head'), 0);
    await file.write(Buffer.from('!'));
    expect(await tree(dir)).toEqual(['.archive.tmp']);
    expect(await file.commit(path)).toBe(false);
    expect(await readFile(path, 'utf8')).toBe('headbody!');
    expect(await tree(dir)).toEqual(['archive.tar']);
    await file.abort(); // after commit: nothing to undo
    expect(await tree(dir)).toEqual(['archive.tar']);
  });

  it('abort removes the temp file; a failed rename leaves the old file and no temp', async () => {
    const file = await Ingestion.open(join(dir, '.t'));
    await file.write(Buffer.from('partial'));
    await file.abort();
    expect(await tree(dir)).toEqual([]);

    // A directory in the way makes rename(2) fail after the temp file was written.
    await mkdir(join(dir, 'd'));
    await writeFile(join(dir, 'd', 'inside'), 'x');
    const second = await Ingestion.open(join(dir, '.u'));
    await second.write(Buffer.from('x'));
    await failure(second.commit(join(dir, 'd')));
    expect(await tree(dir)).toEqual(['d', 'd/inside']);
  });
});

describe('ingestBytes', () => {
  it('staged: checks the digest first, writes the temp file in one call, found staged, appears only at commit', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const batch = new IngestBatch();
    const path = join(dir, 'blobs', 'sha256', digestHex(DIGEST));
    const r = await ingestBytes(path, DATA, { digest: DIGEST, tmp: join(tmp, 'a'), batch, ifExists: 'keep', dirMode: 0o700, mode: 0o600 });
    expect(r).toEqual({ path, digest: DIGEST, size: DATA.length, existed: false });
    expect(batch.stagedAt(path)).toBe(join(tmp, 'a'));
    expect((await stat(join(tmp, 'a'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'blobs'))).mode & 0o777).toBe(0o700);
    expect(await tree(join(dir, 'blobs'))).toEqual(['sha256']);
    // Again while staged, by bytes or by stream: found, nothing written.
    expect((await ingestBytes(path, DATA, { digest: DIGEST, tmp: join(tmp, 'b'), batch, ifExists: 'keep' })).existed).toBe(true);
    expect((await ingestFile(path, chunks(DATA), { digest: DIGEST, tmp: join(tmp, 'c'), batch, ifExists: 'keep' })).existed).toBe(true);
    expect(await tree(tmp)).toEqual(['a']);

    await batch.commit();
    expect((await readFile(path)).equals(DATA)).toBe(true);
    expect(await tree(tmp)).toEqual([]);
    // Present: kept, nothing written.
    expect(await ingestBytes(path, DATA, { digest: DIGEST, tmp: join(tmp, 'd'), batch, ifExists: 'keep' })).toEqual({ path, digest: DIGEST, size: 0, existed: true });
    expect(batch.size).toBe(0);
    expect(await tree(tmp)).toEqual([]);
  });

  it('other bytes, or another size, are refused naming the digest and the path; nothing is written or staged', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const batch = new IngestBatch();
    const path = join(dir, digestHex(DIGEST));
    const tampered = Buffer.from(DATA);
    tampered[100] = tampered[100]! ^ 1;
    for (const b of [batch, undefined]) {
      const err = await failure(ingestBytes(path, tampered, { digest: DIGEST, tmp: join(tmp, 'a'), ...(b === undefined ? {} : { batch: b }) }));
      expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
      expect(err.message).toContain(DIGEST);
      expect(err.message).toContain(path);
      const short = await failure(ingestBytes(path, DATA, { digest: DIGEST, size: DATA.length + 1, tmp: join(tmp, 'a'), ...(b === undefined ? {} : { batch: b }) }));
      expect(isFerryError(short, 'SIZE_MISMATCH')).toBe(true);
    }
    expect(batch.size).toBe(0);
    expect(await tree(dir)).toEqual(['tmp']);
  });

  it('alone: fsynced and renamed into place at once; an existing target is kept or replaced; a failed write leaves no temp file', async () => {
    const path = join(dir, 'a', 'blob');
    expect(await ingestBytes(path, DATA, { digest: DIGEST, dirMode: 0o700 })).toEqual({ path, digest: DIGEST, size: DATA.length, existed: false });
    expect((await readFile(path)).equals(DATA)).toBe(true);
    expect((await ingestBytes(path, DATA, { digest: DIGEST, ifExists: 'keep' })).existed).toBe(true);
    await writeFile(path, 'stale');
    expect((await ingestBytes(path, DATA, { digest: DIGEST })).existed).toBe(false);
    expect((await readFile(path)).equals(DATA)).toBe(true);
    expect(await tree(dir)).toEqual(['a', 'a/blob']);
    // The temp file's directory is missing: an IO_ERROR naming it, staged or not, and nothing left.
    for (const batch of [new IngestBatch(), undefined]) {
      const err = await failure(ingestBytes(join(dir, 'b'), DATA, { digest: DIGEST, tmp: join(dir, 'missing', 'x'), ...(batch === undefined ? {} : { batch }) }));
      expect(isFerryError(err, 'IO_ERROR')).toBe(true);
      expect(err.message).toContain(join(dir, 'missing'));
      expect(batch?.size ?? 0).toBe(0);
    }
    expect(await tree(dir)).toEqual(['a', 'a/blob']);
  });
});
