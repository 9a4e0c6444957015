import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { link, mkdir, symlink, writeFile, chown, chmod, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { TarReader, type TarEntry } from '../../src/store/tar-reader.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const native = nativeFs();
let dir: string;
let src: string;
const longName = `${'long-directory-name/'.repeat(8)}file-with-a-long-name.txt`;

async function readAll(stream: Readable): Promise<Array<TarEntry & { body: Buffer }>> {
  const reader = new TarReader(stream, 'test tar');
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
    const reader = new TarReader(Readable.from([tar]), 't');
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
