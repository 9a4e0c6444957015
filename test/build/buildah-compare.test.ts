import { execFile } from 'node:child_process';
import { chmod, cp, mkdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { removeDir } from '../helpers/tmp.js';
import { buildah, comparedConfig, ferryOk, imageId, unpackArchive, withoutBuildahMounts, writeContext } from './build-helpers.js';

/**
 * ferry build side by side with buildah bud on the same Dockerfiles, context and base image (the
 * busybox test image, given to buildah as an OCI layout): the two root filesystems are the same
 * (names, types, modes, owners, contents, link targets) and the configs agree on Env, Entrypoint,
 * Cmd, WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal, Healthcheck, Shell, OnBuild.
 * The contexts cover every instruction, multi-stage COPY --from, ARG before FROM, --chown by name,
 * --chmod, .dockerignore with an exception, ADD of gzip/bzip2/xz/plain tarballs, globs, docker's
 * trailing-slash rules, a RUN that deletes files of the base and one that replaces a directory.
 */
const run = promisify(execFile);
const CONTEXTS = join(dirname(fileURLToPath(import.meta.url)), 'contexts');

let work: string;
let layout: TestLayout;
let root: string;

beforeAll(async () => {
  // buildah derives an image name from an oci: path, so the path must be lower case.
  work = join(tmpdir(), `ferry-build-buildah-${process.pid}-${Date.now()}`);
  await mkdir(work);
  layout = await buildTestLayout(join(work, 'layout'));
  root = join(work, 'store');
  await ferryOk(root, ['import', `oci:${layout.dir}:base`]);
  // The same base in buildah's store, under a name.
  const id = (await buildah(join(work, 'buildah'), ['pull', '-q', `oci:${layout.dir}:base`])).trim();
  await buildah(join(work, 'buildah'), ['tag', id, 'localhost/ferry-test-base']);
}, 60_000);

afterAll(async () => {
  await removeDir(work);
});

/** Copy a context from test/build/contexts and add the archives it ADDs (made here by tar). */
async function prepare(name: string): Promise<string> {
  const dir = join(work, 'ctx', name);
  await mkdir(dirname(dir), { recursive: true });
  await cp(join(CONTEXTS, name), dir, { recursive: true, verbatimSymlinks: true });
  // git keeps no directory modes: a private directory is made so here.
  if (name === 'rules') await chmod(join(dir, 'private'), 0o700);
  const src = join(work, 'archive-src', name);
  await writeContext(src, { 't/f.txt': 'in the tarball\n', 'pkg/bz.txt': 'packed\n', 'pkg/sub/deep.txt': 'deep\n' });
  // Links as images have them: an absolute target (resolved in the image, never on the host) and a relative one.
  await symlink('/etc/passwd', join(src, 't', 'abs-link'));
  await symlink('f.txt', join(src, 't', 'rel-link'));
  await run('tar', ['-C', src, '--owner=123', '--group=456', '-czf', join(dir, 'arch.tar.gz'), 't']);
  await run('tar', ['-C', src, '-cjf', join(dir, 'pkg.tar.bz2'), 'pkg']);
  await run('tar', ['-C', src, '-cJf', join(dir, 'pkg.tar.xz'), 'pkg']);
  await run('tar', ['-C', src, '-cf', join(dir, 'plain.tar'), 'pkg']);
  return dir;
}

async function compare(name: string, knownDifferences: (config: Record<string, unknown>) => void = () => undefined): Promise<void> {
  const context = await prepare(name);
  const out = join(work, 'out', name);
  await mkdir(out, { recursive: true });

  const built = await ferryOk(root, ['build', '--no-cache', '-t', `cmp/${name}`, context]);
  expect(imageId(built)).toMatch(/^sha256:[0-9a-f]{64}$/);
  await ferryOk(root, ['save', '-o', join(out, 'ferry.tar'), `cmp/${name}`]);

  const bh = join(work, 'buildah');
  await buildah(bh, ['bud', '--isolation', 'chroot', '--format', 'docker', '--pull-never', '--build-arg', 'BASE=localhost/ferry-test-base', '-t', `cmp-${name}`, context]);
  await buildah(bh, ['push', `cmp-${name}`, `docker-archive:${join(out, 'buildah.tar')}:cmp-${name}:latest`]);

  const ours = await unpackArchive(join(out, 'ferry.tar'), join(out, 'ferry'));
  const theirs = await unpackArchive(join(out, 'buildah.tar'), join(out, 'buildah'));
  const base = await unpackArchive(await saveBase(out), join(out, 'base'));
  expect(ours.tree).toEqual(withoutBuildahMounts(theirs.tree, base.tree));
  knownDifferences(theirs.config);
  expect(comparedConfig(ours.config)).toEqual(comparedConfig(theirs.config));
}

async function saveBase(out: string): Promise<string> {
  const file = join(out, 'base.tar');
  await ferryOk(root, ['save', '-o', file, 'base']);
  return file;
}

describe('ferry build and buildah bud make the same image', () => {
  it('every instruction: multi-stage COPY --from, ARG before FROM, --chown by name, .dockerignore, ADD of a tarball, RUNs that delete and replace', async () => {
    await compare('all-instructions');
  }, 180_000);

  it("docker's rules: ONBUILD, SHELL, ENV forms, globs, trailing slashes, ADD of bzip2/xz/plain tars and of a non-archive, USER by number", async () => {
    await compare('rules', (config) => {
      // buildah 1.28 wraps shell-form CMD/ENTRYPOINT in /bin/sh -c even after SHELL; the
      // Dockerfile reference (and docker, BuildKit) use the SHELL for them, as ferry does.
      for (const k of ['Cmd', 'Entrypoint']) {
        const v = config[k] as string[];
        expect(v.slice(0, 2)).toEqual(['/bin/sh', '-c']);
        config[k] = ['/bin/sh', '-ec', ...v.slice(2)];
      }
    });
  }, 180_000);
});
