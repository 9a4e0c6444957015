import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, chown, link, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { BLOCK, TAR_END, encodeTarHeader, padding } from '../../src/io/tar-format.js';
import { TarReader, type TarEntry, type TarProblem, type TarReaderOptions } from '../../src/io/tar-reader.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** Problems become errors that carry them, so tests can look at every field. */
class ProblemError extends Error {
  constructor(readonly problem: TarProblem) {
    super(problem.why);
  }
}

function reader(chunks: Buffer | Buffer[], options: Partial<TarReaderOptions> = {}): TarReader {
  return new TarReader(Readable.from(Array.isArray(chunks) ? chunks : [chunks]), {
    what: 'test tar',
    error: (p) => new ProblemError(p),
    ...options,
  });
}

async function problemOf(p: Promise<unknown>): Promise<TarProblem> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProblemError);
  return (err as ProblemError).problem;
}

async function drain(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of body) out.push(c);
  return Buffer.concat(out);
}

function file(name: string, body: string | Buffer, extra: Partial<Parameters<typeof encodeTarHeader>[0]> = {}): Buffer {
  const data = Buffer.from(body);
  return Buffer.concat([encodeTarHeader({ name, typeflag: '0', mode: 0o644, size: data.length, mtime: 0, ...extra }), data, padding(data.length)]);
}

const run = promisify(execFile);
const native = nativeFs();
let dir: string;
let src: string;
const longName = `${'long-directory-name/'.repeat(8)}file-with-a-long-name.txt`;

async function readAll(stream: Readable): Promise<Array<TarEntry & { body: Buffer }>> {
  const reader = new TarReader(stream, { what: 'test tar', error: (p) => new ProblemError(p) });
  const out: Array<TarEntry & { body: Buffer }> = [];
  for (;;) {
    const e = await reader.next();
    if (e === undefined) return out;
    const chunks: Buffer[] = [];
    if (e.type === 'file') for await (const c of reader.body()) chunks.push(c);
    out.push({ ...e, body: Buffer.concat(chunks) });
  }
}

beforeAll(async () => {
  dir = await makeTempDir('tar-reader');
  src = join(dir, 'src');
  await mkdir(join(src, 'dir'), { recursive: true });
  await mkdir(join(src, longName, '..'), { recursive: true });
  await writeFile(join(src, longName), 'long\n');
  await writeFile(join(src, 'dir', 'file'), 'hello\n');
  await chown(join(src, 'dir', 'file'), 1234, 5678);
  await chmod(join(src, 'dir', 'file'), 0o4750);
  await utimes(join(src, 'dir', 'file'), 1_600_000_000, 1_600_000_000);
  native.lsetxattr(join(src, 'dir', 'file'), 'user.bin', Buffer.from([0, 10, 255, 61]));
  await link(join(src, 'dir', 'file'), join(src, 'hard'));
  await symlink('/target/of/link', join(src, 'sym'));
  native.mknod(join(src, 'null'), 0o20666, 1, 3);
  native.mknod(join(src, 'fifo'), 0o10644, 0, 0);
  await writeFile(join(src, 'big'), Buffer.alloc(200_000, 7));
});
afterAll(async () => {
  await removeDir(dir);
});

describe('TarReader against GNU tar', () => {
  for (const format of ['pax', 'gnu', 'ustar'] as const) {
    it(`reads GNU tar --format=${format}: types, owners, modes, times, links, devices${format === 'pax' ? ', binary xattrs' : ''}`, async () => {
      const tarPath = join(dir, `${format}.tar`);
      const names = format === 'ustar' ? ['dir', 'hard', 'sym', 'null', 'fifo', 'big'] : ['dir', 'hard', 'sym', 'null', 'fifo', 'big', 'long-directory-name'];
      const xattrs = format === 'pax' ? ['--xattrs', '--xattrs-include=user.*'] : [];
      await run('tar', [...xattrs, `--format=${format}`, '-cf', tarPath, '-C', src, ...names]);
      const entries = await readAll(createReadStream(tarPath, { highWaterMark: 1000 }));
      const by = new Map(entries.map((e) => [e.name.toString().replace(/\/$/, ''), e]));
      const file = by.get('dir/file')!;
      expect(file, [...by.keys()].join(',')).toBeDefined();
      expect(file.type).toBe('file');
      expect(file.body.toString()).toBe('hello\n');
      expect([file.uid, file.gid, file.mode, file.mtime.sec]).toEqual([1234, 5678, 0o4750, 1_600_000_000]);
      if (format === 'pax') expect(file.xattrs.get('user.bin')).toEqual(Buffer.from([0, 10, 255, 61]));
      expect(by.get('dir')!.type).toBe('dir');
      const hard = by.get('hard')!;
      expect([hard.type, hard.linkname.toString()]).toEqual(['hardlink', 'dir/file']);
      expect([by.get('sym')!.type, by.get('sym')!.linkname.toString()]).toEqual(['symlink', '/target/of/link']);
      expect([by.get('null')!.type, by.get('null')!.devmajor, by.get('null')!.devminor]).toEqual(['char', 1, 3]);
      expect(by.get('fifo')!.type).toBe('fifo');
      expect(by.get('big')!.body.equals(Buffer.alloc(200_000, 7))).toBe(true);
      if (format !== 'ustar') expect(by.get(longName)!.body.toString()).toBe('long\n');
    });
  }
});

describe('TarReader edge cases', () => {
  it('reads PAX fractional and negative times, atime, and base-256 sizes in headers', async () => {
    const tar = buildTar([{ name: 'f', body: 'x', pax: { mtime: '-1.5', atime: '1700000000.25' } }]);
    const [e] = await readAll(Readable.from([tar]));
    expect(e!.mtime).toEqual({ sec: -2, nsec: 500_000_000 });
    expect(e!.atime).toEqual({ sec: 1_700_000_000, nsec: 250_000_000 });
  });

  it('hands out bodies in chunks, one byte at a time if the stream does', async () => {
    const tar = buildTar([{ name: 'a', body: 'abc' }, { name: 'b', body: 'defg' }]);
    const entries = await readAll(Readable.from([...tar].map((b) => Buffer.from([b]))));
    expect(entries.map((e) => e.body.toString())).toEqual(['abc', 'defg']);
  });

  it('skips an unread body when the next entry is asked for', async () => {
    const tar = buildTar([{ name: 'a', body: 'x'.repeat(1500) }, { name: 'b', body: 'y' }]);
    const reader = new TarReader(Readable.from([tar]), { what: 't', error: (p) => new ProblemError(p) });
    expect((await reader.next())!.name.toString()).toBe('a');
    expect((await reader.next())!.name.toString()).toBe('b');
    expect(await reader.next()).toBeUndefined();
  });

  it('LIBARCHIVE.xattr records (base64 values) are read', async () => {
    const tar = buildTar([{ name: 'f', body: 'x', pax: { 'LIBARCHIVE.xattr.user.k%3Dv': Buffer.from([1, 2, 0]).toString('base64') } }]);
    const [e] = await readAll(Readable.from([tar]));
    expect(e!.xattrs.get('user.k=v')).toEqual(Buffer.from([1, 2, 0]));
  });
});

describe('TarReader offsets and bodies', () => {
  it('reports where each header and body is, also after a PAX header', async () => {
    const a = file('a', 'x'.repeat(600));
    const b = file(`long/${'n'.repeat(120)}`, 'bee');
    const r = reader(Buffer.concat([a, b, TAR_END]));
    const first = (await r.next())!;
    expect([first.headerOffset, first.bodyOffset, first.size]).toEqual([0, BLOCK, 600]);
    const second = (await r.next())!;
    // a: header + 2 blocks of body; b: PAX header + its records block, then its own header.
    expect(second.headerOffset).toBe(3 * BLOCK + 2 * BLOCK);
    expect(second.bodyOffset).toBe(second.headerOffset + BLOCK);
    expect(second.name.toString()).toBe(`long/${'n'.repeat(120)}`);
    expect((await drain(r.body())).toString()).toBe('bee');
    expect(await r.next()).toBeUndefined();
    expect(r.offset).toBe(a.length + b.length + TAR_END.length);
  });

  it('hands out an unknown entry type as "other" and skips its body', async () => {
    const odd = file('vendor', 'data', { typeflag: 'Q' });
    const r = reader(Buffer.concat([odd, file('next', 'n'), TAR_END]));
    expect(await r.next()).toMatchObject({ type: 'other', typeflag: 'Q', size: 4 });
    expect((await r.next())!.name.toString()).toBe('next');
  });

  it('readBody reads a small body whole and refuses one over its limit', async () => {
    const r = reader(Buffer.concat([file('small', 'abc'), file('large', 'x'.repeat(100)), TAR_END]));
    await r.next();
    expect((await r.readBody(10)).toString()).toBe('abc');
    await r.next();
    expect(await problemOf(r.readBody(10))).toMatchObject({ kind: 'limit', part: 'body', size: 100, limit: 10 });
  });

  it('asking for the next entry while a body is being read is an error', async () => {
    const r = reader(Buffer.concat([file('a', 'x'.repeat(2000)), TAR_END]), { end: 'lenient' });
    await r.next();
    const body = r.body();
    await body.next();
    await expect(r.next()).rejects.toThrow(/internal error/);
    await body.return(undefined);
    expect(await r.next()).toBeUndefined();
  });
});

describe('TarReader ends', () => {
  it('strict (default): a clean end after a complete entry needs no marker (as GNU tar and Go); only zeros may follow a marker', async () => {
    const noEnd = file('f', 'x');
    const r = reader(noEnd);
    await r.next();
    expect(await r.next()).toBeUndefined();
    expect(r.offset).toBe(noEnd.length);
    // Extended headers with no entry after them are a truncated entry, not a clean end.
    const pax = Buffer.concat([encodeTarHeader({ name: 'PaxHeaders/x', typeflag: 'x', mode: 0o644, size: 12, mtime: 0 }), Buffer.from('12 path=abc\n'), padding(12)]);
    const dangling = reader(Buffer.concat([noEnd, pax]));
    await dangling.next();
    expect(await problemOf(dangling.next())).toMatchObject({ kind: 'truncated', part: 'header', header: noEnd.length + pax.length });
    const marked = reader(Buffer.concat([noEnd, pax, TAR_END]));
    await marked.next();
    expect(await problemOf(marked.next())).toMatchObject({ kind: 'truncated', part: 'header' });
    const trailing = reader(Buffer.concat([noEnd, TAR_END, Buffer.alloc(5000), Buffer.from('junk')]));
    await trailing.next();
    expect(await problemOf(trailing.next())).toMatchObject({ kind: 'trailing', part: 'end' });
  });

  it('lenient: the archive may stop between entries, and reading stops at the marker', async () => {
    const r = reader(file('f', 'x'), { end: 'lenient' });
    expect((await r.next())!.name.toString()).toBe('f');
    expect(await r.next()).toBeUndefined();
    const marked = reader(Buffer.concat([TAR_END, Buffer.from('not read')]), { end: 'lenient' });
    expect(await marked.next()).toBeUndefined();
    expect(marked.offset).toBe(BLOCK);
  });

  it('truncation is reported with the part, the header and the size concerned', async () => {
    const whole = Buffer.concat([file('a', 'a'), file('b', 'y'.repeat(3000)), TAR_END]);
    const inBody = reader(whole.subarray(0, 2 * BLOCK + BLOCK + 1000));
    await inBody.next();
    await inBody.next();
    expect(await problemOf(drain(inBody.body()))).toMatchObject({ kind: 'truncated', part: 'body', header: 2 * BLOCK, size: 3000, offset: 3 * BLOCK + 1000 });
    const skipped = reader(whole.subarray(0, 2 * BLOCK + BLOCK + 1000));
    await skipped.next();
    await skipped.next();
    expect(await problemOf(skipped.next())).toMatchObject({ kind: 'truncated', part: 'body', header: 2 * BLOCK });
    const inHeader = reader(whole.subarray(0, 2 * BLOCK + 100));
    await inHeader.next();
    expect(await problemOf(inHeader.next())).toMatchObject({ kind: 'truncated', part: 'header', header: 2 * BLOCK });
  });

  it('a bad checksum is a checksum problem at its header', async () => {
    const tar = Buffer.concat([file('a', 'a'), file('b', 'b'), TAR_END]);
    tar[2 * BLOCK + 5] = 0x41;
    const r = reader(tar);
    await r.next();
    expect(await problemOf(r.next())).toMatchObject({ kind: 'checksum', header: 2 * BLOCK });
  });

  it('the extended headers before one entry are capped together (a flood of small PAX or GNU L/K headers too)', async () => {
    const ext = (typeflag: string, size: number): Buffer => Buffer.concat([encodeTarHeader({ name: 'x', typeflag, mode: 0o644, size, mtime: 0 }), Buffer.alloc(size + (-size & 511), 0x61)]);
    const flood = reader(Buffer.concat([ext('L', 400_000), ext('K', 400_000), ext('L', 400_000), file('f', 'x'), TAR_END]));
    expect(await problemOf(flood.next())).toMatchObject({ kind: 'limit', part: 'extended', size: 400_000, limit: 1024 * 1024 });
    // The count starts again at each entry.
    const r = reader(Buffer.concat([ext('L', 600_000), file('a', 'x'), ext('L', 600_000), file('b', 'y'), TAR_END]));
    expect((await r.next())!.name.length).toBe(600_000);
    expect((await r.next())!.name.length).toBe(600_000);
    expect(await r.next()).toBeUndefined();
  });

  it('an oversized extended header is a limit problem, before it is buffered', async () => {
    const pax = encodeTarHeader({ name: 'PaxHeaders/x', typeflag: 'x', mode: 0o644, size: 2 * 1024 * 1024, mtime: 0 });
    expect(await problemOf(reader(pax).next())).toMatchObject({ kind: 'limit', part: 'extended', size: 2 * 1024 * 1024, limit: 1024 * 1024 });
  });
});
