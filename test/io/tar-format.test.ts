import { execFile } from 'node:child_process';
import { lstat, mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeFs } from '../../src/io/native.js';
import {
  BLOCK,
  TAR_END,
  checksumMatches,
  decodeHeader,
  encodeTarHeader,
  padding,
  paxRecord,
  parsePaxRecords,
  readNumber,
} from '../../src/io/tar-format.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('tar-format');
});
afterAll(async () => {
  await removeDir(dir);
});

function file(name: string | Buffer, body: string, extra: Partial<Parameters<typeof encodeTarHeader>[0]> = {}): Buffer[] {
  const data = Buffer.from(body);
  return [encodeTarHeader({ name, typeflag: '0', mode: 0o644, size: data.length, mtime: 1_700_000_000, ...extra }), data, padding(data.length)];
}

describe('encodeTarHeader', () => {
  it('GNU tar extracts what it writes: long names and links, large owners, binary xattrs, devices', async () => {
    const longName = `${'deep-directory/'.repeat(10)}file`;
    const longLink = `/${'target/'.repeat(20)}end`;
    const value = Buffer.from([0, 10, 255, 61, 0]);
    const tar = Buffer.concat([
      encodeTarHeader({ name: 'd/', typeflag: '5', mode: 0o750, size: 0, mtime: 1_700_000_000 }),
      ...file('d/f', 'hello\n', { uid: 1000, gid: 1001, mode: 0o4755, xattrs: [['user.bin', value]] }),
      ...file(longName, 'long\n'),
      ...file('big-owner', 'x', { uid: 3_000_000, gid: 4_000_000 }),
      encodeTarHeader({ name: 'link', typeflag: '2', mode: 0o777, size: 0, mtime: 0, linkname: longLink }),
      encodeTarHeader({ name: 'null', typeflag: '3', mode: 0o666, size: 0, mtime: 0, devmajor: 1, devminor: 3 }),
      TAR_END,
    ]);
    await writeFile(join(dir, 'all.tar'), tar);
    const { stdout } = await run('tar', ['--numeric-owner', '-tvf', join(dir, 'all.tar')]);
    const lines = stdout.trim().split('\n').map((l) => l.replace(/\s+/g, ' '));
    expect(lines[0]).toMatch(/^drwxr-x--- 0\/0 0 2023-11-1\d \d\d:\d\d d\/$/);
    expect(lines[1]).toMatch(/^-rwsr-xr-x 1000\/1001 6 .* d\/f$/);
    expect(lines[2]).toContain(longName);
    expect(lines[3]).toMatch(/ 3000000\/4000000 1 .* big-owner$/);
    expect(lines[4]).toContain(`link -> ${longLink}`);
    expect(lines[5]).toMatch(/^crw-rw-rw- 0\/0 1,3 /);

    const out = join(dir, 'out');
    await mkdir(out);
    await run('tar', ['--xattrs', '--xattrs-include=user.*', '-xf', join(dir, 'all.tar'), '-C', out, 'd', longName, 'link']);
    expect(nativeFs().lgetxattr(join(out, 'd', 'f'), 'user.bin')).toEqual(value);
    expect(await readFile(join(out, longName), 'utf8')).toBe('long\n');
    expect(await readlink(join(out, 'link'))).toBe(longLink);
    expect((await lstat(join(out, 'd', 'f'))).mtimeMs).toBe(1_700_000_000_000);
  });

  it('is deterministic, and a PAX header only comes when a field does not fit', () => {
    const short = encodeTarHeader({ name: 'a/b', typeflag: '0', mode: 0o644, size: 10, mtime: 5 });
    expect(short.length).toBe(BLOCK);
    expect(encodeTarHeader({ name: 'a/b', typeflag: '0', mode: 0o644, size: 10, mtime: 5 }).equals(short)).toBe(true);
    expect(checksumMatches(short)).toBe(true);
    expect(decodeHeader(short)).toMatchObject({ name: Buffer.from('a/b'), typeflag: '0', mode: 0o644, uid: 0, gid: 0, size: 10, mtime: 5 });
    // A name of exactly 100 bytes fits (no NUL needed).
    expect(encodeTarHeader({ name: 'n'.repeat(100), typeflag: '0', mode: 0o644, size: 0, mtime: 0 }).length).toBe(BLOCK);
    const big = encodeTarHeader({ name: 'big', typeflag: '0', mode: 0o644, size: 9 * 1024 ** 3, mtime: 0 });
    expect(big.length).toBe(3 * BLOCK);
    expect(decodeHeader(big.subarray(0, BLOCK)).typeflag).toBe('x');
    expect(parsePaxRecords(big.subarray(BLOCK, 2 * BLOCK)).get('size')?.toString()).toBe(String(9 * 1024 ** 3));
    // The overflowing field itself holds 0.
    expect(decodeHeader(big.subarray(2 * BLOCK)).size).toBe(0);
  });

  it("extensions 'none': one block, GNU base-256 for large numbers, long names and xattrs refused", () => {
    const size = 9 * 1024 ** 3 + 5;
    const block = encodeTarHeader({ name: 'layer.tar', typeflag: '0', mode: 0o644, size, mtime: 0 }, { extensions: 'none' });
    expect(block.length).toBe(BLOCK);
    expect(block[124]).toBe(0x80);
    expect(readNumber(block, 124, 12, 'size')).toBe(size);
    expect(checksumMatches(block)).toBe(true);
    expect(() => encodeTarHeader({ name: 'n'.repeat(101), typeflag: '0', mode: 0, size: 0, mtime: 0 }, { extensions: 'none' })).toThrow(/longer than 100 bytes/);
    expect(() =>
      encodeTarHeader({ name: 'x', typeflag: '0', mode: 0, size: 0, mtime: 0, xattrs: [['user.a', Buffer.from('b')]] }, { extensions: 'none' }),
    ).toThrow(/PAX/);
    expect(() => encodeTarHeader({ name: 'x', typeflag: '0', mode: 0, size: -1, mtime: 0 })).toThrow(/invalid size/);
  });
});

describe('PAX records', () => {
  it('the length counts itself, also where it gains a digit; binary values round-trip', () => {
    // Around the lengths where the record's length gains a digit (10, 100, 1000 bytes).
    for (const n of [0, 1, 3, 4, 5, 6, 7, 92, 93, 94, 95, 96, 991, 992, 993, 994, 995]) {
      const value = Buffer.alloc(n, 0x0a);
      const record = paxRecord('k', value);
      expect(Number(record.toString('latin1').split(' ')[0])).toBe(record.length);
      expect(parsePaxRecords(record).get('k')).toEqual(value);
    }
  });

  it('malformed records are refused', () => {
    expect(() => parsePaxRecords(Buffer.from('99 path=x\n'))).toThrow(/does not match/);
    expect(() => parsePaxRecords(Buffer.from('x path=x\n'))).toThrow(/not a number/);
    expect(() => parsePaxRecords(Buffer.from('9 =value\n'))).toThrow(/without a key/);
  });
});

describe('readNumber', () => {
  const field = (bytes: string | number[]): Buffer => {
    const b = Buffer.alloc(12);
    (typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes)).copy(b);
    return b;
  };
  it('reads octal as writers write it, and as old tools padded it', () => {
    expect(readNumber(field('00000000644\0'), 0, 12, 'mode')).toBe(0o644);
    expect(readNumber(field('     644 \0'), 0, 12, 'mode')).toBe(0o644);
    expect(readNumber(field('\t644\n'), 0, 12, 'mode')).toBe(0o644);
    expect(readNumber(field('77777777777 '), 0, 12, 'size')).toBe(8 ** 11 - 1);
    expect(readNumber(field(''), 0, 12, 'uid')).toBe(0);
    expect(readNumber(field('\0garbage'), 0, 12, 'uid')).toBe(0);
  });
  it('reads GNU base-256, positive and negative', () => {
    expect(readNumber(field([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]), 0, 12, 'size')).toBe(258);
    expect(readNumber(field(Array(12).fill(0xff) as number[]), 0, 12, 'mtime')).toBe(-1);
  });
  it('refuses what is not a number, naming the field', () => {
    expect(() => readNumber(field('12 34\0'), 0, 12, 'size')).toThrow('size field "12 34" is not an octal number');
    expect(() => readNumber(field('0000009\0'), 0, 12, 'uid')).toThrow(/uid field "0000009"/);
    expect(() => readNumber(field([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0, 12, 'size')).toThrow(/out of range/);
  });
});

describe('checksums', () => {
  it('accepts the signed sum old tools wrote, refuses a wrong one', () => {
    const block = encodeTarHeader({ name: Buffer.from([0xe9, 0xe9]), typeflag: '0', mode: 0o644, size: 0, mtime: 0 });
    let signed = 0;
    for (let i = 0; i < BLOCK; i++) {
      const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
      signed += b > 127 ? b - 256 : b;
    }
    block.write(`${signed.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    expect(checksumMatches(block)).toBe(true);
    block[0] = 0x41;
    expect(checksumMatches(block)).toBe(false);
  });
});
