import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { indexTar, normalizeEntryName } from '../../src/archive/tar-index.js';
import { collect, failsWith, sh, tarOf } from './fixtures.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('tar-index');
});
afterAll(async () => {
  await removeDir(dir);
});

async function tarFile(name: string, bytes: Buffer): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

describe('indexTar', () => {
  it('indexes a GNU tar with long names, a pax tar, links; reads byte ranges', async () => {
    const src = join(dir, 'src');
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}.txt`;
    await mkdir(join(src, 'd'.repeat(120)), { recursive: true });
    await writeFile(join(src, long), 'long name\n');
    await writeFile(join(src, 'small'), 'x'.repeat(1000));
    await writeFile(join(src, 'empty'), '');
    await sh(`ln -s small link && ln small hard`, src);
    for (const format of ['gnu', 'pax', 'ustar']) {
      if (format === 'ustar') {
        // ustar cannot hold the long name: only the short files.
        await sh(`tar --format=ustar -cf ${dir}/t-ustar.tar ./small ./empty ./link ./hard`, src);
      } else {
        await sh(`tar --format=${format} -cf ${dir}/t-${format}.tar .`, src);
      }
      const index = await indexTar(join(dir, `t-${format}.tar`), `archive ${format}`);
      if (format !== 'ustar') {
        const e = index.lookup(long)!;
        expect(e.type).toBe('file');
        expect((await collect(index.open(e))).toString()).toBe('long name\n');
      }
      // "./small" is indexed as "small"
      const small = index.lookup('./small')!;
      expect(small.size).toBe(1000);
      expect((await index.read(small, 1000)).toString()).toBe('x'.repeat(1000));
      expect((await index.head(small, 3)).toString()).toBe('xxx');
      expect(index.lookup('link')).toEqual(small);
      // GNU tar stores a hardlink to the first name it met; either way it resolves to the data
      expect((await collect(index.open(index.lookup('hard')!))).length).toBe(1000);
      expect((await collect(index.open(index.lookup('empty')!))).length).toBe(0);
      expect(index.lookup('nope')).toBeUndefined();
      await expect(index.read(small, 10)).rejects.toThrow(/1000 bytes, over the 10-byte limit/);
    }
  });

  it('reads sizes over 8 GiB in GNU base-256 and in a pax size record (sparse file, no real data)', async () => {
    const big = 9 * 1024 ** 3 + 5;
    const padded = Math.ceil(big / 512) * 512;
    // GNU: the size field holds 0x80 then the size big-endian; the checksum is recomputed.
    const header = tarOf([{ name: 'big' }], { end: false });
    header.fill(0, 124, 136);
    header[124] = 0x80;
    header.writeUIntBE(big, 136 - 6, 6);
    header.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const gnu = await tarFile('big-gnu.tar', Buffer.concat([header]));
    await truncate(gnu, 512 + padded + 1024);
    const g = await indexTar(gnu, 'gnu');
    expect(g.lookup('big')).toMatchObject({ offset: 512, size: big });

    const pax = tarOf([{ name: 'PaxHeader', type: 'ExtendedHeader', data: `${` size=${big}\n`.length + 2} size=${big}\n` }, { name: 'big' }], {
      end: false,
    });
    const paxFile = await tarFile('big-pax.tar', pax);
    await truncate(paxFile, pax.length + padded + 1024);
    expect((await indexTar(paxFile, 'pax')).lookup('big')).toMatchObject({ offset: pax.length, size: big });
    // The same file cut short is a truncated tar, not a read past its end.
    await truncate(paxFile, pax.length + 4096);
    expect(await failsWith(indexTar(paxFile, 'pax'), 'INVALID_MANIFEST')).toContain(`needs ${big} bytes, the file ends first`);
  });

  it('accepts a tar without the end-of-archive blocks', async () => {
    const file = await tarFile('noend.tar', tarOf([{ name: 'a', data: 'hi' }], { end: false }));
    const index = await indexTar(file, 'noend');
    expect((await collect(index.open(index.lookup('a')!))).toString()).toBe('hi');
  });

  it('refuses a file that is not a tar', async () => {
    const file = await tarFile('junk.tar', Buffer.alloc(4096, 'junk'));
    expect(await failsWith(indexTar(file, 'docker-archive junk.tar'), 'INVALID_MANIFEST')).toBe('docker-archive junk.tar: not a tar archive');
  });

  it('refuses an empty file and a missing one', async () => {
    const file = await tarFile('empty.tar', Buffer.alloc(0));
    expect(await failsWith(indexTar(file, 'e'), 'INVALID_MANIFEST')).toContain('truncated');
    expect(await failsWith(indexTar(join(dir, 'missing.tar'), 'm'), 'NOT_FOUND')).toContain('m: cannot open');
  });

  it('refuses a truncated tar, naming where it ends', async () => {
    const whole = tarOf([{ name: 'a', data: Buffer.alloc(5000, 1) }, { name: 'b', data: 'b' }]);
    const file = await tarFile('cut.tar', whole.subarray(0, 2048));
    expect(await failsWith(indexTar(file, 'cut'), 'INVALID_MANIFEST')).toMatch(/^cut: truncated tar \(entry at byte 0 needs 5000 bytes/);
  });

  it('refuses a header with a bad checksum after the first', async () => {
    const bytes = tarOf([{ name: 'a', data: 'a' }, { name: 'b', data: 'b' }]);
    bytes[1024 + 10] = bytes[1024 + 10]! ^ 0xff; // second header's name
    const file = await tarFile('badsum.tar', bytes);
    expect(await failsWith(indexTar(file, 'bad'), 'INVALID_MANIFEST')).toBe('bad: bad tar header checksum at byte 1024');
  });

  describe('attacks', () => {
    it.each([
      ['a ".." entry name', [{ name: '../evil', data: 'x' }], 'entry "../evil" leaves the archive'],
      ['a ".." in the middle', [{ name: 'a/../../evil', data: 'x' }], 'leaves the archive'],
      ['an absolute entry name', [{ name: '/etc/passwd', data: 'x' }], 'entry "/etc/passwd" is an absolute path'],
      ['a symlink to an absolute path', [{ name: 'l', type: 'SymbolicLink', linkpath: '/etc/passwd' }], 'is a symlink to the absolute path "/etc/passwd"'],
      ['a symlink out with ".."', [{ name: 'd/l', type: 'SymbolicLink', linkpath: '../../etc/passwd' }], 'is a symlink that leaves the archive'],
      ['a hardlink out with ".."', [{ name: 'h', type: 'Link', linkpath: '../etc/passwd' }], 'leaves the archive'],
    ] as const)('%s is UNSAFE_PATH', async (_n, entries, why) => {
      const file = await tarFile(`attack-${Math.random()}.tar`, tarOf([...entries]));
      const msg = await failsWith(indexTar(file, 'docker-archive evil.tar'), 'UNSAFE_PATH');
      expect(msg).toContain('docker-archive evil.tar: ');
      expect(msg).toContain(why);
    });

    it('a symlink loop is an error, not a hang', async () => {
      const file = await tarFile(
        'loop.tar',
        tarOf([
          { name: 'a', type: 'SymbolicLink', linkpath: 'b' },
          { name: 'b', type: 'SymbolicLink', linkpath: 'a' },
        ]),
      );
      const index = await indexTar(file, 'loop');
      expect(() => index.lookup('a')).toThrow('loop: entry "a": too many levels of links');
    });

    it('a directory is not a file', async () => {
      const index = await indexTar(await tarFile('dir.tar', tarOf([{ name: 'd/', type: 'Directory' }])), 'dir');
      expect(() => index.lookup('d')).toThrow('dir: entry "d" is a directory, not a file');
    });

    it('lookup names are confined too', () => {
      expect(() => normalizeEntryName('../x', 'w')).toThrow('w: entry "../x" leaves the archive');
      expect(normalizeEntryName('./a//b/', 'w')).toBe('a/b');
      expect(normalizeEntryName('./', 'w')).toBe('');
    });
  });
});
