import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FerryError } from '../../src/errors.js';
import { nativeFs } from '../../src/io/native.js';
import { unpackLayerTar, xattrForLayer, xattrPlan, type UnpackResult } from '../../src/store/unpack.js';
import { buildTar, entryBytes, extendedHeader, paxRecords, sha256, type TarSpec } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * Hostile and tricky layers, each named after the attack. Every test unpacks into `root` and
 * checks that the sentinel tree `outside` (beside it) is exactly as before: nothing is ever
 * written outside the layer directory.
 */
const native = nativeFs();
let base: string;
let root: string;
let outside: string;
let n = 0;

async function snapshot(dir: string): Promise<string> {
  const lines: string[] = [];
  const walk = async (path: string, rel: string): Promise<void> => {
    const st = await lstat(path);
    let extra = '';
    if (st.isFile()) extra = createHash('sha256').update(await readFile(path)).digest('hex');
    if (st.isSymbolicLink()) extra = await readlink(path);
    lines.push(`${rel} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs} ${extra}`);
    if (st.isDirectory()) for (const name of (await readdir(path)).sort()) await walk(join(path, name), `${rel}/${name}`);
  };
  await walk(dir, '.');
  return lines.join('\n');
}

let before: string;

beforeAll(async () => {
  base = await makeTempDir('unpack-hostile');
});
afterAll(async () => {
  await removeDir(base);
});
beforeEach(async () => {
  n++;
  root = join(base, `root${n}`);
  outside = join(base, `outside${n}`);
  await mkdir(root, { mode: 0o755 });
  await mkdir(join(outside, 'etc'), { recursive: true });
  await writeFile(join(outside, 'sentinel'), 'do not touch\n', { mode: 0o600 });
  await writeFile(join(outside, 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n', { mode: 0o644 });
  before = await snapshot(outside);
});

async function unpack(entries: TarSpec[] | Buffer, lowerDirs: string[] = [], rootless?: boolean): Promise<UnpackResult> {
  const tar = Buffer.isBuffer(entries) ? entries : buildTar(entries);
  try {
    const result = await unpackLayerTar(Readable.from([tar]), root, { what: 'test layer', lowerDirs, ...(rootless === undefined ? {} : { rootless }) });
    expect(result.diffId).toBe(sha256(tar));
    return result;
  } finally {
    expect(await snapshot(outside)).toBe(before);
  }
}

async function refused(entries: TarSpec[] | Buffer, code: string, message?: RegExp): Promise<FerryError> {
  const err = await unpack(entries).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FerryError);
  const fe = err as FerryError;
  expect(fe.code).toBe(code);
  if (message) expect(fe.message).toMatch(message);
  return fe;
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
}

function rel(): string {
  // A relative path from root to outside: root and outside are siblings.
  return `../outside${n}`;
}

describe('path traversal', () => {
  it('dot-dot escape ../outside/x is refused', async () => {
    await refused([{ name: `${rel()}/pwned`, body: 'x' }], 'UNSAFE_PATH', /\.\./);
    expect(await exists(join(outside, 'pwned'))).toBe(false);
  });

  it('dot-dot hidden in the middle a/../../x is refused', async () => {
    await refused([{ name: 'a/', type: 'dir' }, { name: `a/../${rel()}/pwned`, body: 'x' }], 'UNSAFE_PATH');
  });

  it('absolute paths /etc/passwd and ////etc/shadow land inside the root', async () => {
    await unpack([
      { name: '/etc/passwd', body: 'in root' },
      { name: '////etc/shadow', body: 'also in root' },
    ]);
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toBe('in root');
    expect(await readFile(join(root, 'etc/shadow'), 'utf8')).toBe('also in root');
  });

  it('PAX path override to ../ is refused although the ustar name is harmless', async () => {
    await refused([{ name: 'harmless', body: 'x', pax: { path: `${rel()}/pwned` } }], 'UNSAFE_PATH');
  });

  it('GNU long name with traversal is refused', async () => {
    await refused([{ name: `${'a/'.repeat(60)}${'../'.repeat(61)}${rel()}/pwned`, body: 'x', gnuLong: true }], 'UNSAFE_PATH');
  });

  it('huge depth (300 components) is refused before any mkdir storm', async () => {
    await refused([{ name: `${'d/'.repeat(300)}f`, body: 'x' }], 'UNSAFE_PATH', /deeper/);
    expect(await readdir(root)).toEqual([]);
  });

  it('a component longer than 255 bytes is a clear error', async () => {
    await refused([{ name: `${'x'.repeat(300)}`, body: 'x' }], 'INVALID_LAYER', /255/);
  });

  it('backslash is an ordinary byte, not a separator (CVE-2021-37701)', async () => {
    await unpack([{ name: 'a\\b', body: 'x' }, { name: 'c:..\\x', body: 'y' }]);
    expect((await readdir(root)).sort()).toEqual(['a\\b', 'c:..\\x']);
  });

  it('names \\xff and \\xfe stay two distinct files, byte for byte', async () => {
    await unpack([
      { name: Buffer.from([0x66, 0xff]), body: 'ff' },
      { name: Buffer.from([0x66, 0xfe]), body: 'fe' },
    ]);
    const names = (await readdir(Buffer.from(root), { encoding: 'buffer' })).map((b) => b.toString('hex')).sort();
    expect(names).toEqual(['66fe', '66ff']);
  });

  it('the root entry cannot change type (./ as a symlink)', async () => {
    await refused([{ name: './', type: 'symlink', linkname: outside }], 'UNSAFE_PATH', /root/);
  });

  it('./ with mode 0700 sets the layer root mode', async () => {
    await unpack([{ name: './', type: 'dir', mode: 0o700 }]);
    expect((await lstat(root)).mode & 0o7777).toBe(0o700);
  });
});

describe('symlinks', () => {
  it('symlink parent escape: dir foo, then symlink foo -> outside, then foo/f is refused', async () => {
    await refused(
      [
        { name: 'foo/', type: 'dir' },
        { name: 'foo', type: 'symlink', linkname: outside },
        { name: 'foo/pwned', body: 'x' },
      ],
      'UNSAFE_PATH',
      /symlink/,
    );
    expect(await exists(join(outside, 'pwned'))).toBe(false);
  });

  it('dir cache poisoning: a/x caches a, then a becomes a symlink, then a/pwned is refused (CVE-2021-32803)', async () => {
    await refused(
      [
        { name: 'a/', type: 'dir' },
        { name: 'a/x', body: 'x' },
        { name: 'a', type: 'symlink', linkname: outside },
        { name: 'a/pwned', body: 'x' },
      ],
      'UNSAFE_PATH',
      /symlink/,
    );
    expect(await exists(join(outside, 'pwned'))).toBe(false);
  });

  it('dir cache poisoning via a hardlink replacing the dir is refused too', async () => {
    await refused(
      [
        { name: 's', type: 'symlink', linkname: outside },
        { name: 'a/x', body: 'x' },
        { name: 'a', type: 'hardlink', linkname: 's' },
        { name: 'a/pwned', body: 'x' },
      ],
      'UNSAFE_PATH',
    );
  });

  it('symlink then file through it (l -> /etc, l/passwd) is refused', async () => {
    await refused(
      [
        { name: 'l', type: 'symlink', linkname: join(outside, 'etc') },
        { name: 'l/passwd', body: 'root::0:0::/:/bin/sh\n' },
      ],
      'UNSAFE_PATH',
    );
  });

  it('symlink then a file of the same name replaces the link, never writes through it', async () => {
    await unpack([
      { name: 's', type: 'symlink', linkname: join(outside, 'sentinel') },
      { name: 's', body: 'replaced', mode: 0o600 },
    ]);
    const st = await lstat(join(root, 's'));
    expect(st.isFile()).toBe(true);
    expect(await readFile(join(root, 's'), 'utf8')).toBe('replaced');
  });

  it('symlink targets are stored verbatim, absolute or relative (PAX linkpath too)', async () => {
    const long = `/${'t'.repeat(150)}`;
    await unpack([
      { name: 'abs', type: 'symlink', linkname: '/etc/shadow' },
      { name: 'up', type: 'symlink', linkname: '../../../../x' },
      { name: 'long', type: 'symlink', linkname: long },
    ]);
    expect(await readlink(join(root, 'abs'))).toBe('/etc/shadow');
    expect(await readlink(join(root, 'up'))).toBe('../../../../x');
    expect(await readlink(join(root, 'long'))).toBe(long);
  });

  it('a directory entry over a symlink replaces the symlink (no mkdir through it)', async () => {
    await unpack([
      { name: 'd', type: 'symlink', linkname: outside },
      { name: 'd/', type: 'dir', mode: 0o777 },
    ]);
    expect((await lstat(join(root, 'd'))).isDirectory()).toBe(true);
  });
});

describe('hardlinks', () => {
  it('hardlink to outside via .. is refused', async () => {
    await refused([{ name: 'h', type: 'hardlink', linkname: `${rel()}/sentinel` }], 'UNSAFE_PATH');
  });

  it('hardlink with an absolute target resolves inside the root', async () => {
    await unpack([
      { name: 'etc/', type: 'dir' },
      { name: 'etc/passwd', body: 'in root' },
      { name: 'h', type: 'hardlink', linkname: '/etc/passwd' },
    ]);
    const a = await lstat(join(root, 'h'));
    const b = await lstat(join(root, 'etc/passwd'));
    expect(a.ino).toBe(b.ino);
  });

  it('hardlink to an absolute path not in the layer is refused, never linked to the host file', async () => {
    await refused([{ name: 'h', type: 'hardlink', linkname: join(outside, 'sentinel') }], 'INVALID_LAYER', /not in this layer/);
  });

  it('hardlink to an outside-pointing symlink, with a mode, changes nothing outside (CVE-2021-32760)', async () => {
    await unpack([
      { name: 's', type: 'symlink', linkname: join(outside, 'sentinel') },
      { name: 'h', type: 'hardlink', linkname: 's', mode: 0o777, uid: 1234 },
    ]);
    expect((await lstat(join(root, 'h'))).isSymbolicLink()).toBe(true);
    expect((await lstat(join(outside, 'sentinel'))).mode & 0o777).toBe(0o600);
  });

  it('hardlink before its target is a clean error', async () => {
    await refused([{ name: 'h', type: 'hardlink', linkname: 'later' }, { name: 'later', body: 'x' }], 'INVALID_LAYER', /not in this layer/);
  });

  it('hardlink through a symlinked parent is refused', async () => {
    await refused(
      [
        { name: 'l', type: 'symlink', linkname: outside },
        { name: 'h', type: 'hardlink', linkname: 'l/sentinel' },
      ],
      'UNSAFE_PATH',
    );
  });

  it('hardlink to a directory is refused', async () => {
    await refused([{ name: 'd/', type: 'dir' }, { name: 'h', type: 'hardlink', linkname: 'd' }], 'UNSAFE_PATH', /directory/);
  });
});

describe('whiteouts', () => {
  it('.wh.NAME becomes a 0:0 character device NAME', async () => {
    await unpack([{ name: 'etc/', type: 'dir' }, { name: 'etc/.wh.gone', body: '' }]);
    const st = await lstat(join(root, 'etc/gone'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
    expect(await exists(join(root, 'etc/.wh.gone'))).toBe(false);
  });

  for (const name of ['.wh.', '.wh..', '.wh...', 'etc/.wh..']) {
    it(`whiteout name "${name}" (empty, . or ..) is refused`, async () => {
      await refused([{ name, body: '' }], 'UNSAFE_PATH', /whiteout/);
    });
  }

  it('.wh.foo/bar is an ordinary path (only the last component is a whiteout)', async () => {
    await unpack([{ name: '.wh.foo/bar', body: 'x' }]);
    expect(await readFile(join(root, '.wh.foo/bar'), 'utf8')).toBe('x');
  });

  it('.wh..wh..opq after same-layer children keeps them and marks the dir opaque', async () => {
    await unpack([
      { name: 'd/', type: 'dir' },
      { name: 'd/kept', body: 'k' },
      { name: 'd/.wh..wh..opq', body: '' },
    ]);
    expect(await readFile(join(root, 'd/kept'), 'utf8')).toBe('k');
    expect(native.lgetxattr(join(root, 'd'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect(await exists(join(root, 'd/.wh..wh..opq'))).toBe(false);
  });

  it('a whiteout inside a dir this layer made opaque leaves no device, in both orders', async () => {
    await unpack([
      { name: 'a/.wh..wh..opq', body: '' },
      { name: 'a/.wh.x', body: '' },
      { name: 'b/.wh.y', body: '' },
      { name: 'b/.wh..wh..opq', body: '' },
    ]);
    expect(await readdir(join(root, 'a'))).toEqual([]);
    expect(await readdir(join(root, 'b'))).toEqual([]);
  });

  it('.wh.f and f in one layer, both orders: f is visible', async () => {
    await unpack([
      { name: '.wh.f1', body: '' },
      { name: 'f1', body: 'one' },
      { name: 'f2', body: 'two' },
      { name: '.wh.f2', body: '' },
    ]);
    expect(await readFile(join(root, 'f1'), 'utf8')).toBe('one');
    expect(await readFile(join(root, 'f2'), 'utf8')).toBe('two');
  });

  it('a dir holding only a whiteout keeps the lower dir mode (tmp 1777 stays 1777)', async () => {
    const lower = join(base, `lower${n}`);
    await mkdir(join(lower, 'tmp'), { recursive: true });
    await chmod(join(lower, 'tmp'), 0o1777);
    await unpack([{ name: 'tmp/.wh.junk', body: '' }], [lower]);
    expect((await lstat(join(root, 'tmp'))).mode & 0o7777).toBe(0o1777);
  });

  it('a layer without a ./ entry keeps the lower root mode (overlay shows the top root)', async () => {
    const lower = join(base, `lower-root${n}`);
    await mkdir(lower, { mode: 0o700 });
    await chmod(lower, 0o700);
    await unpack([{ name: 'f', body: 'x' }], [lower]);
    expect((await lstat(root)).mode & 0o7777).toBe(0o700);
  });

  it('aufs metadata (.wh..wh.plnk/...) is skipped with a warning', async () => {
    const r = await unpack([{ name: '.wh..wh.plnk/123.456', body: 'x' }, { name: 'ok', body: 'y' }]);
    expect(await readdir(root)).toEqual(['ok']);
    expect(r.warnings.join('\n')).toMatch(/aufs/);
  });
});

describe('xattrs, owners, modes, devices, times', () => {
  it('trusted.overlay.opaque injection is escaped, the dir is not opaque', async () => {
    await unpack([
      { name: 'd/', type: 'dir', xattrs: { 'trusted.overlay.opaque': 'y' } },
      { name: 'f', body: 'x', xattrs: { 'user.overlay.redirect': '/etc', 'trusted.overlay.metacopy': '' } },
    ]);
    expect(native.lgetxattr(join(root, 'd'), 'trusted.overlay.opaque')).toBeNull();
    expect(native.lgetxattr(join(root, 'd'), 'trusted.overlay.overlay.opaque')?.toString()).toBe('y');
    expect(native.lgetxattr(join(root, 'f'), 'user.overlay.redirect')).toBeNull();
    expect(native.lgetxattr(join(root, 'f'), 'user.overlay.overlay.redirect')?.toString()).toBe('/etc');
    expect(native.lgetxattr(join(root, 'f'), 'trusted.overlay.overlay.metacopy')?.length).toBe(0);
  });

  it('escaping round-trips: xattrForLayer undoes xattrPlan and drops overlay control attributes', () => {
    for (const name of ['trusted.overlay.opaque', 'user.overlay.redirect', 'user.mime', 'security.capability']) {
      const plan = xattrPlan(name);
      expect('set' in plan && xattrForLayer(plan.set)).toBe(name);
    }
    expect(xattrForLayer('trusted.overlay.opaque')).toBeUndefined();
    expect(xattrForLayer('user.overlay.origin')).toBeUndefined();
  });

  it('other trusted.* and security.selinux are dropped with a warning', async () => {
    const r = await unpack([{ name: 'f', body: 'x', xattrs: { 'trusted.evil': 'x', 'security.selinux': 'system_u:object_r:shadow_t:s0' } }]);
    expect(native.llistxattr(join(root, 'f')).filter((x) => !x.startsWith('security.selinux'))).toEqual([]);
    expect(r.warnings.join('\n')).toMatch(/trusted\.evil/);
    expect(r.warnings.join('\n')).toMatch(/security\.selinux/);
  });

  it('binary xattr values (NUL and newline) are byte-exact, incl. security.capability', async () => {
    const value = Buffer.from([0x00, 0x0a, 0xff, 0x00, 0x3d, 0x0a]);
    // VFS_CAP_REVISION_2, permitted = CAP_NET_BIND_SERVICE (bit 10): holds NUL and 0x0a-like bytes.
    const cap = Buffer.from([0x00, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    await unpack([{ name: 'f', body: 'x', uid: 1000, xattrs: { 'user.bin': value, 'security.capability': cap } }]);
    expect(native.lgetxattr(join(root, 'f'), 'user.bin')).toEqual(value);
    expect(native.lgetxattr(join(root, 'f'), 'security.capability')).toEqual(cap);
  });

  it('setuid survives chown: chmod comes after lchown', async () => {
    await unpack([{ name: 'su', body: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1000 }, { name: 'sg', body: 'x', mode: 0o2711, uid: 0, gid: 50 }]);
    const su = await lstat(join(root, 'su'));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect([su.uid, su.gid]).toEqual([1000, 1000]);
    expect((await lstat(join(root, 'sg'))).mode & 0o7777).toBe(0o2711);
  });

  it('a 0555 dir with children unpacks and ends 0555', async () => {
    await unpack([{ name: 'ro/', type: 'dir', mode: 0o555 }, { name: 'ro/f', body: 'x' }, { name: 'ro/sub/', type: 'dir', mode: 0o500 }]);
    expect((await lstat(join(root, 'ro'))).mode & 0o7777).toBe(0o555);
    expect((await lstat(join(root, 'ro/sub'))).mode & 0o7777).toBe(0o500);
  });

  it('device nodes and FIFOs are created with owner and mode', async () => {
    await unpack([
      { name: 'dev/', type: 'dir' },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
      { name: 'fifo', type: 'fifo', mode: 0o620, uid: 7 },
    ]);
    const nul = await lstat(join(root, 'dev/null'));
    expect(nul.isCharacterDevice()).toBe(true);
    expect(nul.mode & 0o7777).toBe(0o666);
    const sda = await lstat(join(root, 'dev/sda'));
    expect(sda.isBlockDevice()).toBe(true);
    expect(sda.gid).toBe(6);
    const fifo = await lstat(join(root, 'fifo'));
    expect(fifo.isFIFO()).toBe(true);
    expect([fifo.uid, fifo.mode & 0o7777]).toEqual([7, 0o620]);
  });

  it('device major overflow (2^33 via PAX) is refused', async () => {
    await refused([{ name: 'dev', type: 'char', pax: { 'SCHILY.devmajor': String(2 ** 33) } }], 'INVALID_LAYER', /out of range/);
  });

  it('mtime -1 and year 3000 are clamped to the epoch; dir mtimes match the tar', async () => {
    await unpack([
      { name: 'd/', type: 'dir', mtime: 1_600_000_000 },
      { name: 'd/old', body: 'x', mtime: -1 },
      { name: 'd/future', body: 'x', mtime: 32_503_680_000 },
      { name: 'd/frac', body: 'x', pax: { mtime: '1700000000.123456789' } },
    ]);
    expect((await lstat(join(root, 'd/old'))).mtimeMs).toBe(0);
    expect((await lstat(join(root, 'd/future'))).mtimeMs).toBe(0);
    expect((await lstat(join(root, 'd'))).mtimeMs).toBe(1_600_000_000_000);
    const big = await lstat(join(root, 'd/frac'), { bigint: true });
    expect(big.mtimeNs).toBe(1_700_000_000_123_456_789n);
  });

  it('symlink times are set on the link itself', async () => {
    await unpack([{ name: 'l', type: 'symlink', linkname: join(outside, 'sentinel'), mtime: 1_000_000 }]);
    expect((await lstat(join(root, 'l'))).mtimeMs).toBe(1_000_000_000);
  });
});

describe('replacement rules', () => {
  it('file replaced by dir: the dir wins and gets its children', async () => {
    await unpack([{ name: 'x', body: 'file' }, { name: 'x/', type: 'dir' }, { name: 'x/child', body: 'c' }]);
    expect(await readFile(join(root, 'x/child'), 'utf8')).toBe('c');
  });

  it('dir replaced by file: the file wins, the old children are gone', async () => {
    await unpack([{ name: 'x/', type: 'dir' }, { name: 'x/child', body: 'c' }, { name: 'x', body: 'file' }]);
    expect(await readFile(join(root, 'x'), 'utf8')).toBe('file');
  });

  it('a regular file as a parent is refused', async () => {
    await refused([{ name: 'f', body: 'x' }, { name: 'f/g', body: 'y' }], 'UNSAFE_PATH', /not a directory/);
  });

  it('duplicate entries: the last one wins', async () => {
    await unpack([{ name: 'f', body: 'first', mode: 0o600 }, { name: 'f', body: 'second', mode: 0o640 }, { name: 'd/', type: 'dir', mode: 0o700 }, { name: 'd/', type: 'dir', mode: 0o750 }]);
    expect(await readFile(join(root, 'f'), 'utf8')).toBe('second');
    expect((await lstat(join(root, 'f'))).mode & 0o777).toBe(0o640);
    expect((await lstat(join(root, 'd'))).mode & 0o777).toBe(0o750);
  });
});

describe('malformed archives', () => {
  it('a truncated tar is refused', async () => {
    const tar = buildTar([{ name: 'f', body: 'x'.repeat(5000) }]);
    await refused(tar.subarray(0, 2048), 'INVALID_LAYER', /truncated/);
  });

  it('a layer without end-of-archive blocks is accepted after a complete entry, as GNU tar and Go do', async () => {
    const r = await unpack(buildTar([{ name: 'd/', type: 'dir' }, { name: 'd/f', body: 'x'.repeat(700) }, { name: 'e', body: '' }], { noEnd: true }));
    expect(r.entries).toBe(3);
    expect(await readFile(join(root, 'd/f'), 'utf8')).toBe('x'.repeat(700));
  });

  it('without end-of-archive blocks, a truncated entry, its missing padding or a PAX header without its entry is still refused', async () => {
    const whole = buildTar([{ name: 'a', body: 'a' }, { name: 'f', body: 'x'.repeat(700) }], { noEnd: true });
    await refused(whole.subarray(0, whole.length - 512), 'INVALID_LAYER', /truncated inside a file/);
    root = `${root}-2`;
    await mkdir(root);
    // The body is complete, the zero padding after it is not.
    await refused(whole.subarray(0, whole.length - 100), 'INVALID_LAYER', /truncated inside a file/);
    root = `${root}-3`;
    await mkdir(root);
    const dangling = Buffer.concat([entryBytes({ name: 'a', body: 'a' }), extendedHeader('x', paxRecords({ path: 'b' }))]);
    await refused(dangling, 'INVALID_LAYER', /extended headers, without their entry/);
  });

  it('a bad header checksum is refused', async () => {
    await refused([{ name: 'f', body: 'x', badChecksum: true }], 'INVALID_LAYER', /checksum/);
  });

  it('trailing garbage after the end marker is refused; zero padding is fine', async () => {
    await refused(buildTar([{ name: 'f', body: 'x' }], { trailing: Buffer.from('garbage') }), 'INVALID_LAYER', /after the end/);
    await unpack(buildTar([{ name: 'g', body: 'x' }], { trailing: Buffer.alloc(8192) }));
  });

  it('an unsupported entry type (GNU sparse S) is refused', async () => {
    await refused([{ name: 'f', typeflag: 'S', body: 'x' }], 'UNSUPPORTED', /type 'S'/);
  });

  it('PAX GNU.sparse records are refused', async () => {
    await refused([{ name: 'f', body: 'x', pax: { 'GNU.sparse.major': '1' } }], 'UNSUPPORTED', /sparse/);
  });

  it('a header size that lies (larger than the archive) is refused as truncated', async () => {
    const lie = Buffer.concat([entryBytes({ name: 'f', body: 'x', headerSize: 1_000_000 }), Buffer.alloc(1024)]);
    await refused(lie, 'INVALID_LAYER', /truncated/);
  });

  it('base-256 numbers (GNU) are read: uid 2^21+5', async () => {
    await unpack([{ name: 'f', body: 'x', uid: 2 ** 21 + 5 }]);
    expect((await lstat(join(root, 'f'))).uid).toBe(2 ** 21 + 5);
  });
});

/**
 * Refused as INVALID_LAYER, naming the layer (by digest) and the entry, and never the staging
 * directory: not in the message, not in the cause chain the CLI prints.
 */
async function refusedNaming(tar: Buffer, entry: string, message?: RegExp): Promise<FerryError> {
  const what = `layer ${sha256(tar)}`;
  const err = await unpackLayerTar(Readable.from([tar]), root, { what }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(await snapshot(outside)).toBe(before);
  expect(err).toBeInstanceOf(FerryError);
  const fe = err as FerryError;
  expect(fe.code, fe.message).toBe('INVALID_LAYER');
  expect(fe.message).toContain(what);
  expect(fe.message).toContain(`entry "${entry}"`);
  if (message) expect(fe.message).toMatch(message);
  for (let e: unknown = fe; e instanceof Error; e = e.cause) expect(e.message).not.toContain(base);
  return fe;
}

describe('hostile metadata: memory amplification and raw errors', () => {
  it('PAX flood: consecutive PAX headers before one entry are capped together, not each (INVALID_LAYER)', async () => {
    // Three headers of 500 KB, each under the old per-header cap of 1 MiB.
    const flood = (h: number): Buffer => extendedHeader('x', paxRecords({ [`comment${h}`]: 'c'.repeat(500_000) }));
    const tar = Buffer.concat([flood(0), flood(1), flood(2), buildTar([{ name: 'f', body: 'x' }])]);
    const err = await refused(tar, 'INVALID_LAYER', /PAX header of \d+ bytes after \d+ bytes of extended headers for the same entry is over the 1048576-byte limit/);
    expect(err.message).toContain('test layer');
    // Under the cap, several PAX headers still merge into one entry's records.
    root = `${root}-2`;
    await mkdir(root);
    const fine = Buffer.concat([extendedHeader('x', paxRecords({ 'SCHILY.xattr.user.a': '1' })), extendedHeader('x', paxRecords({ 'SCHILY.xattr.user.b': '2' })), buildTar([{ name: 'g', body: 'y' }])]);
    await unpack(fine);
    expect(native.lgetxattr(join(root, 'g'), 'user.a')?.toString()).toBe('1');
    expect(native.lgetxattr(join(root, 'g'), 'user.b')?.toString()).toBe('2');
  });

  it('PAX record flood: 20,000 tiny records for one entry (each costs ~100x its size once parsed) are refused', async () => {
    const records: Record<string, string> = {};
    for (let i = 0; i < 20_000; i++) records[`k${i}`] = 'v';
    await refused(buildTar([{ name: 'f', body: 'x', pax: records }]), 'INVALID_LAYER', /20000 PAX records for one entry are over the 10000-record limit/);
  });

  it('GNU long-name flood: L and K records before one entry count toward the same cap', async () => {
    const long = (flag: 'L' | 'K'): Buffer => extendedHeader(flag, Buffer.alloc(600 * 1024, 0x61));
    const tar = Buffer.concat([long('L'), long('K'), buildTar([{ name: 'f', body: 'x' }])]);
    await refused(tar, 'INVALID_LAYER', /GNU long link of 614400 bytes after 614400 bytes of extended headers/);
  });

  it('NUL byte in a PAX path or linkpath is INVALID_LAYER naming the entry, not a Node error on the staging path', async () => {
    const path = buildTar([{ name: 'harmless', body: 'x', pax: { path: Buffer.from('evil\0/etc/passwd') } }]);
    await refusedNaming(path, 'harmless', /PAX path "evil\\x00\/etc\/passwd" contains a NUL byte/);
    const link = buildTar([{ name: 'l', type: 'symlink', linkname: 'x', pax: { linkpath: Buffer.from('a\0b') } }]);
    await refusedNaming(link, 'l', /PAX linkpath "a\\x00b" contains a NUL byte/);
  });

  it('PAX uid 2^32+1 (and gid 2^32-1, which chown reads as "leave unchanged") is INVALID_LAYER naming the entry', async () => {
    await refusedNaming(buildTar([{ name: 'f', body: 'x', pax: { uid: String(2 ** 32 + 1) } }]), 'f', /owner 4294967297:0 is out of range/);
    await refusedNaming(buildTar([{ name: 'd/', type: 'dir', pax: { gid: String(2 ** 32 - 1) } }]), 'd/', /owner 0:4294967295 is out of range/);
  });

  it('bad LIBARCHIVE.xattr names (malformed %-encoding, %00, 300 bytes) are INVALID_LAYER naming the entry', async () => {
    const value = Buffer.from('v').toString('base64');
    await refusedNaming(buildTar([{ name: 'f', body: 'x', pax: { 'LIBARCHIVE.xattr.user.%ZZ': value } }]), 'f', /LIBARCHIVE\.xattr name "user\.%ZZ" is not valid URL encoding/);
    await refusedNaming(buildTar([{ name: 'f', body: 'x', pax: { 'LIBARCHIVE.xattr.user.a%00b': value } }]), 'f', /xattr name "user\.a\\x00b" is not 1\.\.255 bytes without NUL/);
    await refusedNaming(buildTar([{ name: 'f', body: 'x', pax: { [`LIBARCHIVE.xattr.user.${'n'.repeat(300)}`]: value } }]), 'f', /is not 1\.\.255 bytes/);
  });

  it('too many xattrs on one inode (ENOSPC from setxattr) is INVALID_LAYER naming the entry, not a full disk', async (ctx) => {
    const xattrs: Record<string, Buffer> = {};
    for (let i = 0; i < 64; i++) xattrs[`user.x${i}`] = Buffer.alloc(1000, 0x61);
    // Filesystems with room for 64 KB of xattrs on one inode (XFS, btrfs with big nodes) have no such limit to test.
    const probe = join(base, `probe${n}`);
    await writeFile(probe, '');
    const fits = Object.entries(xattrs).every(([k, v]) => {
      try {
        native.lsetxattr(probe, k, v);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return false;
        throw err;
      }
    });
    if (fits) ctx.skip();
    await refusedNaming(buildTar([{ name: 'd/', type: 'dir' }, { name: 'd/many', body: 'x', xattrs }]), 'd/many', /xattrs do not fit on one inode .*ENOSPC/);
  });
});

describe('rootless unpack (what a non-root user gets)', () => {
  it('skips devices and chown with warnings and marks opaque dirs with user.overlay.opaque', async () => {
    const r = await unpack(
      [
        { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
        { name: 'd/.wh..wh..opq', body: '' },
        { name: 'f', body: 'x', uid: 1000 },
      ],
      [],
      true,
    );
    expect(await exists(join(root, 'dev/null'))).toBe(false);
    expect(native.lgetxattr(join(root, 'd'), 'user.overlay.opaque')?.toString()).toBe('y');
    expect(native.lgetxattr(join(root, 'd'), 'trusted.overlay.opaque')).toBeNull();
    expect((await lstat(join(root, 'f'))).uid).toBe(process.getuid!());
    expect(r.warnings.join('\n')).toMatch(/skipped device/);
    expect(r.warnings.join('\n')).toMatch(/not root/);
  });
});
