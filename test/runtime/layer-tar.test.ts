import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { chmod, chown, link, lstat, mkdir, readFile, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import { listLayeredDir, lookupLayered, readLayeredFile } from '../../src/runtime/layered-fs.js';
import { upperLayerTar } from '../../src/runtime/layer-tar.js';
import { containerChanges } from '../../src/runtime/changes.js';
import { unpackLayerTar } from '../../src/store/unpack.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * The commit tar is the inverse of the store's unpack: an upper directory in overlay form,
 * written as a tar and unpacked again, gives the same tree. And the layered reads (user lookup,
 * diff) follow overlay's rules without mounting anything.
 */
const run = promisify(execFile);
let work: string;
const native = nativeFs();
const LONG = `l/${'x'.repeat(150)}`;

async function tarOf(dir: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of upperLayerTar(dir)) chunks.push(c);
  return Buffer.concat(chunks);
}

/** An upper layer with every kind of entry overlayfs leaves there. */
async function makeUpper(dir: string): Promise<void> {
  await mkdir(join(dir, 'a'), { recursive: true });
  await writeFile(join(dir, 'a', 'f'), 'file\n');
  await chown(join(dir, 'a', 'f'), 1000, 1001);
  await chmod(join(dir, 'a', 'f'), 0o640);
  native.lsetxattr(join(dir, 'a', 'f'), 'user.test', Buffer.from([0, 1, 2, 10, 255]));
  native.lsetxattr(join(dir, 'a'), 'trusted.overlay.origin', Buffer.from('overlay internals'));
  native.mknod(join(dir, 'a', 'gone'), constants.S_IFCHR, 0, 0);
  await mkdir(join(dir, 'o'));
  native.lsetxattr(join(dir, 'o'), 'trusted.overlay.opaque', Buffer.from('y'));
  await writeFile(join(dir, 'o', 'new'), 'new\n');
  await writeFile(join(dir, 'h1'), 'linked\n');
  await link(join(dir, 'h1'), join(dir, 'h2'));
  await symlink('a/f', join(dir, 's'));
  await mkdir(join(dir, 'l'));
  await writeFile(join(dir, LONG), 'long\n');
  native.mknod(join(dir, 'p'), constants.S_IFIFO | 0o600, 0, 0);
  await writeFile(join(dir, 'suid'), '#!/bin/sh\n');
  await chmod(join(dir, 'suid'), 0o4755);
  for (const p of ['a/f', 'o/new', 'h1', LONG, 'suid', 'o', 'a', 'l', '']) await utimes(join(dir, p), 1_700_000_000, 1_700_000_000);
}

beforeAll(async () => {
  work = await makeTempDir('rt-tar');
});
afterAll(async () => {
  await removeDir(work);
});

describe('commit tar (upper layer -> OCI layer)', () => {
  it('turns whiteouts into .wh. files and opaque dirs into .wh..wh..opq, keeps hardlinks, long names, user xattrs; is deterministic', async () => {
    const upper = join(work, 'upper');
    await makeUpper(upper);
    const tar = await tarOf(upper);
    expect((await tarOf(upper)).equals(tar)).toBe(true);
    await writeFile(join(work, 'layer.tar'), tar);
    const { stdout } = await run('tar', ['--numeric-owner', '-tvf', join(work, 'layer.tar')]);
    const lines = stdout.trim().split('\n').map((l) => l.replace(/\s+/g, ' '));
    const names = lines.map((l) => l.split(' ').slice(5).join(' '));
    expect(names).toEqual([
      'a/', 'a/f', 'a/.wh.gone', 'h1', 'h2 link to h1', 'l/', LONG, 'o/', 'o/.wh..wh..opq', 'o/new', 'p', 's -> a/f', 'suid',
    ]);
    expect(lines.find((l) => l.endsWith(' a/f'))).toMatch(/^-rw-r----- 1000\/1001 5 /);
    expect(lines.find((l) => l.endsWith(' suid'))).toMatch(/^-rwsr-xr-x /);
    expect(lines.find((l) => l.endsWith(' p'))).toMatch(/^p/);
    const { stdout: xattrs } = await run('tar', ['--xattrs', '--xattrs-include=*', '-tvvf', join(work, 'layer.tar')]);
    expect(xattrs).not.toContain('trusted.overlay');
  });

  it('unpacked by the store it gives back the same overlay tree', async () => {
    const upper = join(work, 'upper');
    const back = join(work, 'back');
    await mkdir(back);
    await unpackLayerTar(Readable.from(await tarOf(upper)), back, { what: 'commit round trip' });
    const gone = await lstat(join(back, 'a', 'gone'));
    expect(gone.isCharacterDevice() && gone.rdev === 0).toBe(true);
    expect(native.lgetxattr(join(back, 'o'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect(native.lgetxattr(join(back, 'a', 'f'), 'user.test')).toEqual(Buffer.from([0, 1, 2, 10, 255]));
    expect(native.lgetxattr(join(back, 'a'), 'trusted.overlay.origin')).toBeNull();
    expect((await lstat(join(back, 'h1'))).ino).toBe((await lstat(join(back, 'h2'))).ino);
    expect(await readlink(join(back, 's'))).toBe('a/f');
    expect(await readFile(join(back, LONG), 'utf8')).toBe('long\n');
    expect((await lstat(join(back, 'p'))).isFIFO()).toBe(true);
    const f = await lstat(join(back, 'a', 'f'));
    expect([f.mode & 0o7777, f.uid, f.gid, f.mtimeMs]).toEqual([0o640, 1000, 1001, 1_700_000_000_000]);
    expect((await lstat(join(back, 'suid'))).mode & 0o7777).toBe(0o4755);
  });
});

describe('layered reads (what the merged overlay shows, without mounting)', () => {
  let lower: string;
  let top: string;
  beforeAll(async () => {
    lower = join(work, 'lower');
    top = join(work, 'top');
    await mkdir(join(lower, 'etc'), { recursive: true });
    await writeFile(join(lower, 'etc', 'passwd'), 'lower passwd\n');
    await mkdir(join(lower, 'd'));
    await writeFile(join(lower, 'd', 'x'), 'x');
    await writeFile(join(lower, 'd', 'y'), 'y');
    await mkdir(join(lower, 'o'));
    await writeFile(join(lower, 'o', 'old'), 'old');
    await mkdir(join(lower, 'real'));
    await writeFile(join(lower, 'real', 'file'), 'through a link\n');
    await mkdir(join(top, 'd'), { recursive: true });
    native.mknod(join(top, 'd', 'x'), constants.S_IFCHR, 0, 0);
    await mkdir(join(top, 'o'));
    native.lsetxattr(join(top, 'o'), 'trusted.overlay.opaque', Buffer.from('y'));
    await writeFile(join(top, 'o', 'fresh'), 'fresh');
    // Absolute and escaping links resolve inside the image root, never on the host.
    await symlink('/../../../../real', join(top, 'abs'));
    await mkdir(join(top, 'etc'));
    await symlink('../../../../../../etc/shadow', join(top, 'etc', 'shadow-link'));
  });

  it('whiteouts hide, opaque directories hide the lower copy, links stay in the root', async () => {
    const layers = [top, lower];
    expect((await readLayeredFile(layers, '/etc/passwd'))?.toString()).toBe('lower passwd\n');
    expect(await lookupLayered(layers, '/d/x')).toBeUndefined();
    expect((await readLayeredFile(layers, '/d/y'))?.toString()).toBe('y');
    const o = await lookupLayered(layers, '/o');
    expect([...(await listLayeredDir(o!, 'o')).keys()]).toEqual(['fresh']);
    const d = await lookupLayered(layers, '/d');
    expect([...(await listLayeredDir(d!, 'd')).keys()]).toEqual(['y']);
    expect((await readLayeredFile(layers, '/abs/file'))?.toString()).toBe('through a link\n');
    expect(await readLayeredFile(layers, '/etc/shadow-link')).toBeUndefined();
    expect((await lookupLayered(layers, '/abs', false))?.stat.isSymbolicLink()).toBe(true);
  });

  it('diff of an upper over those layers', async () => {
    expect(await containerChanges(top, [lower])).toEqual([
      { kind: 'A', path: '/abs' },
      { kind: 'C', path: '/d' },
      { kind: 'D', path: '/d/x' },
      { kind: 'C', path: '/etc' },
      { kind: 'A', path: '/etc/shadow-link' },
      { kind: 'C', path: '/o' },
      { kind: 'A', path: '/o/fresh' },
      { kind: 'D', path: '/o/old' },
    ]);
  });
});
