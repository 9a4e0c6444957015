import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { ferry, ferryOk, writeContext } from './build-helpers.js';

/**
 * A Dockerfile and its context are hostile input: a bad one fails with the Dockerfile and line
 * named, exit 1 (usage errors 2), never a stack trace, and adds nothing to the store.
 */
const run = promisify(execFile);
let work: string;
let root: string;

beforeAll(async () => {
  work = await makeTempDir('build-bad');
  const layout = await buildTestLayout(join(work, 'layout'));
  root = join(work, 'store');
  await ferryOk(root, ['import', `oci:${layout.dir}:base`]);
  await writeFile(join(work, 'secret.txt'), 'outside the context\n');
}, 60_000);

afterAll(async () => {
  await removeDir(work);
});

/** What the store holds, apart from its tmp/ and lock: refs, blobs, layers, containers, cache. */
async function storeState(): Promise<string[]> {
  const out: string[] = [await readFile(join(root, 'refs.json'), 'utf8')];
  for (const dir of ['blobs/sha256', 'layers', 'containers', 'build-cache']) {
    try {
      out.push(`${dir}: ${(await readdir(join(root, dir))).sort().join(' ')}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return out;
}

async function failing(name: string, files: Record<string, string>, expected: { code: number; message: RegExp }, setup?: (dir: string) => Promise<void>): Promise<void> {
  const context = join(work, name);
  await writeContext(context, files);
  await setup?.(context);
  const before = await storeState();
  const r = await ferry(root, ['build', '-t', `bad/${name}`, context]);
  expect(r.code, r.stdout + r.stderr).toBe(expected.code);
  expect(r.stderr).toMatch(expected.message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  expect(await storeState()).toEqual(before);
}

describe('bad Dockerfiles and contexts', () => {
  it('an unknown instruction names the file and line', async () => {
    await failing('unknown', { Dockerfile: 'FROM base\nENV A=1\nFROB /x\n' }, { code: 1, message: /^ferry: Dockerfile:3: unknown instruction: FROB/m });
  });

  it('an unterminated heredoc names the line it starts on', async () => {
    await failing('heredoc', { Dockerfile: 'FROM base\n\nRUN <<EOF\necho hi\nEOF2\n' }, { code: 1, message: /Dockerfile:3: unterminated heredoc <<EOF/ });
  });

  it('COPY of a path outside the context is refused', async () => {
    await failing('outside', { Dockerfile: 'FROM base\nENV A=1\nCOPY ../secret.txt /s.txt\n' }, { code: 1, message: /Dockerfile:3: COPY \.\.\/secret\.txt: the path is outside the build context/ });
  });

  it('COPY through a symlink that leaves the context is refused', async () => {
    await failing(
      'symlink-out',
      { Dockerfile: 'FROM base\nLABEL a=b\nCOPY link/secret.txt /s.txt\n' },
      { code: 1, message: /Dockerfile:3: COPY: link\/secret\.txt goes through the symlink link -> \.\.\/?, which leaves the build context/ },
      async (dir) => symlink('..', join(dir, 'link')),
    );
    await failing(
      'symlink-abs',
      { Dockerfile: 'FROM base\nCOPY passwd /p\n' },
      { code: 1, message: /Dockerfile:2: COPY: passwd goes through the symlink passwd -> \/etc\/passwd, which leaves the build context/ },
      async (dir) => symlink('/etc/passwd', join(dir, 'passwd')),
    );
  });

  it('a bad .dockerignore pattern, a bad glob and runaway nesting are errors, not crashes', async () => {
    await failing('bad-ignore', { Dockerfile: 'FROM base\nCOPY . /x\n', '.dockerignore': 'ok\n[z-a]\n' }, { code: 1, message: /\.dockerignore: line 2: bad pattern "\[z-a\]"/ });
    await failing('bad-glob', { Dockerfile: 'FROM base\nCOPY [z-a]* /x\n', 'a.txt': 'a' }, { code: 1, message: /Dockerfile:2: COPY: \[z-a\]\*: bad pattern/ });
    const deep = `${'${A:-'.repeat(100)}x${'}'.repeat(100)}`;
    await failing('nesting', { Dockerfile: `FROM base\nENV B=${deep}\n` }, { code: 1, message: /Dockerfile:2: ENV: substitutions nested more than 64 deep/ });
  });

  it('ADD of a tarball that writes through its own symlink to a host directory is refused; nothing reaches the host', async () => {
    const outside = join(work, 'outside-target');
    await mkdir(outside);
    await failing(
      'add-through-link',
      { Dockerfile: 'FROM base\nADD evil.tar /x/\n' },
      { code: 1, message: /Dockerfile:2: ADD evil\.tar: entry "link\/pwned\.txt" refused: its parent "link" is a symlink/ },
      async (dir) => {
        const src = join(work, 'evil-src');
        await mkdir(src);
        await symlink(outside, join(src, 'link'));
        await run('tar', ['-C', src, '-cf', join(dir, 'evil.tar'), 'link']);
        // The same name again as a directory entry holding a file: the write would follow the link.
        await writeContext(join(work, 'evil-src2'), { 'link/pwned.txt': 'pwned\n' });
        await run('tar', ['-C', join(work, 'evil-src2'), '-rf', join(dir, 'evil.tar'), 'link/pwned.txt']);
      },
    );
    expect(await readdir(outside)).toEqual([]);
    await failing(
      'add-dotdot',
      { Dockerfile: 'FROM base\nADD evil.tar /x/\n' },
      { code: 1, message: /Dockerfile:2: ADD evil\.tar: .*\.\./ },
      async (dir) => {
        await writeContext(join(work, 'dd'), { 'a/escape.txt': 'escape\n' });
        await run('tar', ['-C', join(work, 'dd', 'a'), '--transform', 's,^,../../,', '-cf', join(dir, 'evil.tar'), 'escape.txt']);
      },
    );
  });

  it('a base image that is not in the store names ferry pull and ferry import', async () => {
    await failing('no-base', { Dockerfile: 'FROM mysql:8\n' }, { code: 1, message: /Dockerfile:1: FROM mysql:8: the image is not in the store[\s\S]*ferry pull[\s\S]*ferry import/ });
  });

  it('ADD of a URL is a clear offline error', async () => {
    await failing('url', { Dockerfile: 'FROM base\nADD https://example.com/x.tgz /x\n' }, { code: 1, message: /Dockerfile:2: ADD https:\/\/example\.com\/x\.tgz: ferry build works offline/ });
  });

  it('a failing RUN names the step and line, names no image and leaves no container; the steps before it stay cached', async () => {
    const context = join(work, 'run-fails');
    await writeContext(context, { Dockerfile: 'FROM base\nRUN echo before > /before.txt\nRUN exit 3\n' });
    const refs = await readFile(join(root, 'refs.json'), 'utf8');
    const r = await ferry(root, ['build', '-t', 'bad/run-fails', context]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ferry: Dockerfile:3: step 3\/3, RUN exit 3: the command exited with code 3/m);
    expect(await readFile(join(root, 'refs.json'), 'utf8')).toBe(refs);
    expect(await readdir(join(root, 'containers'))).toEqual([]);
    await writeContext(context, { Dockerfile: 'FROM base\nRUN echo before > /before.txt\nRUN exit 0\n' });
    const fixed = await ferryOk(root, ['build', '-t', 'bad/run-fails', context]);
    expect(fixed).toMatch(/STEP 2\/3: RUN echo before > \/before.txt\n--> CACHED/);
  });

  it('usage errors exit 2', async () => {
    const none = await ferry(root, ['build']);
    expect(none.code).toBe(2);
    const net = await ferry(root, ['build', '--network', 'bridge', work]);
    expect(net.code).toBe(2);
    expect(net.stderr).toMatch(/--network bridge: expected none or host/);
    const missing = await ferry(root, ['build', join(work, 'no-such-dir')]);
    expect(missing.code).toBe(2);
    const target = join(work, 'target');
    await writeContext(target, { Dockerfile: 'FROM base AS one\n' });
    const badTarget = await ferry(root, ['build', '--target', 'two', target]);
    expect(badTarget.code).toBe(2);
    expect(badTarget.stderr).toMatch(/--target two: no stage of that name/);
  });
});
