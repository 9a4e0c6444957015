import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isFerryError } from '../../src/errors.js';
import { tempPathFor, writeFileAtomic } from '../../src/io/atomic-file.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir('atomic');
});
afterEach(async () => {
  await removeDir(dir);
});

describe('writeFileAtomic', () => {
  it('writes a new file with the given mode and leaves no temp file', async () => {
    const path = join(dir, 'refs.json');
    await writeFileAtomic(path, '{"a":1}', 0o600);
    expect(await readFile(path, 'utf8')).toBe('{"a":1}');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['refs.json']);
  });

  it('replaces an existing file whole', async () => {
    const path = join(dir, 'f');
    await writeFile(path, 'old content that is longer');
    await writeFileAtomic(path, Buffer.from('new'));
    expect(await readFile(path, 'utf8')).toBe('new');
    expect(await readdir(dir)).toEqual(['f']);
  });

  it('fails with IO_ERROR naming the path when the directory is missing', async () => {
    const path = join(dir, 'missing', 'f');
    const err = await writeFileAtomic(path, 'x').catch((e: unknown) => e);
    expect(isFerryError(err, 'IO_ERROR')).toBe(true);
    expect((err as Error).message).toContain(`write ${path}: `);
  });

  it('leaves the old file and no temp file when the rename fails', async () => {
    // A directory in the way makes rename(2) fail after the temp file was written.
    const path = join(dir, 'd');
    await mkdir(path);
    await writeFile(join(path, 'inside'), 'x');
    const err = await writeFileAtomic(path, 'x').catch((e: unknown) => e);
    expect(isFerryError(err, 'IO_ERROR')).toBe(true);
    expect(await readdir(dir)).toEqual(['d']);
  });

  it('temp names sit beside the target and differ each time', () => {
    const a = tempPathFor('/x/y/z.json');
    expect(a.startsWith('/x/y/.z.json.tmp-')).toBe(true);
    expect(tempPathFor('/x/y/z.json')).not.toBe(a);
  });
});
