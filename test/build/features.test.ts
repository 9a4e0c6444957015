import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry } from '../helpers/registry.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { ferryOk, imageId, writeContext } from './build-helpers.js';

/**
 * What buildah 1.28 cannot be compared on, checked against the Dockerfile reference directly:
 * heredocs, the escape directive, --target, --build-arg, --label, -q, --iidfile, COPY --from an
 * image, WORKDIR/USER inherited by RUN; and a built image travelling like any other (export,
 * import elsewhere, run; fsck clean).
 */
const run = promisify(execFile);
let work: string;
let root: string;
let layout: TestLayout;

beforeAll(async () => {
  work = await makeTempDir('build-features');
  layout = await buildTestLayout(join(work, 'layout'));
  root = join(work, 'store');
  await ferryOk(root, ['import', `oci:${layout.dir}:base`]);
  await ferryOk(root, ['import', `oci:${layout.dir}:tools`]);
}, 60_000);

afterAll(async () => {
  await removeDir(work);
});

async function sh(image: string, script: string): Promise<string> {
  return ferryOk(root, ['run', '--rm', '--user', 'root', '--entrypoint', '/bin/sh', image, '-c', script]);
}

describe('ferry build: the rest of the Dockerfile reference', () => {
  it('heredocs: RUN <<EOF as a script (with #!: its own interpreter), COPY <<EOF with and without expansion, a heredoc the shell reads', async () => {
    const context = join(work, 'heredoc');
    await writeContext(context, {
      Dockerfile: [
        'FROM base',
        'ARG NAME=world',
        'RUN <<EOF',
        'echo "hello $NAME" > /run-script.txt',
        'echo second line >> /run-script.txt',
        'EOF',
        'COPY <<EOF /etc/greeting.txt',
        'Hello ${NAME}',
        'EOF',
        "COPY <<'EOF' /etc/literal.txt",
        'Hello ${NAME}',
        'EOF',
        'RUN cat <<EOF > /inline.txt',
        '\tinline $NAME',
        'EOF',
        'RUN <<-EOF',
        '\techo tabs stripped > /tabs.txt',
        '\tEOF',
        'RUN <<SCRIPT',
        '#!/bin/sh -e',
        'echo "own interpreter: $0" > /shebang.txt',
        'SCRIPT',
        '',
      ].join('\n'),
    });
    await ferryOk(root, ['build', '-t', 'feat/heredoc', context]);
    const out = await sh('feat/heredoc', 'cat /run-script.txt /etc/greeting.txt /etc/literal.txt /inline.txt /tabs.txt /shebang.txt');
    expect(out).toBe('hello world\nsecond line\nHello world\nHello ${NAME}\n\tinline world\ntabs stripped\nown interpreter: /dev/pipes/SCRIPT\n');
  }, 60_000);

  it('the escape directive, --build-arg, --label, --target, -q and --iidfile', async () => {
    const context = join(work, 'flags');
    await writeContext(context, {
      Dockerfile: [
        '# escape=`',
        'ARG FLAVOUR=plain',
        'FROM base AS first',
        'ARG FLAVOUR',
        'RUN echo "flavour=$FLAVOUR" > /flavour.txt && `',
        '    echo continued >> /flavour.txt',
        'LABEL stage=first',
        '',
        'FROM first AS second',
        'RUN echo second > /second.txt',
        '',
      ].join('\n'),
    });
    const iid = join(work, 'iid');
    const out = await ferryOk(root, ['build', '-q', '--target', 'first', '--build-arg', 'FLAVOUR=spicy', '--label', 'org.example.ci=yes', '--iidfile', iid, '-t', 'feat/flags', context]);
    expect(out).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(await readFile(iid, 'utf8')).toBe(out.trim());
    expect(await sh('feat/flags', 'cat /flavour.txt; test -e /second.txt && echo second-built || echo target-stopped')).toBe('flavour=spicy\ncontinued\ntarget-stopped\n');
    const inspect = JSON.parse(await ferryOk(root, ['inspect', 'feat/flags'])) as { digest: string; config: string };
    expect(inspect.digest).toBe(out.trim());
    const config = JSON.parse(await readFile(join(root, 'blobs', 'sha256', inspect.config.slice('sha256:'.length)), 'utf8')) as { config: { Labels: Record<string, string> } };
    expect(config.config.Labels).toEqual({ stage: 'first', 'org.example.ci': 'yes' });
  }, 60_000);

  it('RUN --mount=type=cache keeps its directory between builds and out of the layer; type=tmpfs is empty and gone; secret is refused', async () => {
    const context = join(work, 'cache-mount');
    await writeContext(context, {
      Dockerfile: 'FROM base\nRUN --mount=type=cache,target=/var/cache/app,uid=1000,gid=1000 echo run >> /var/cache/app/runs && wc -l < /var/cache/app/runs > /seen.txt && stat -c %u /var/cache/app >> /seen.txt\n',
    });
    await ferryOk(root, ['build', '--no-cache', '-t', 'feat/cache-mount', context]);
    expect(await sh('feat/cache-mount', 'cat /seen.txt; ls -A /var/cache/app | wc -l')).toBe('1\n1000\n0\n');
    await ferryOk(root, ['build', '--no-cache', '-t', 'feat/cache-mount', context]);
    expect(await sh('feat/cache-mount', 'cat /seen.txt')).toBe('2\n1000\n');
    const tmp = join(work, 'tmpfs-mount');
    await writeContext(tmp, { Dockerfile: 'FROM base\nRUN --mount=type=tmpfs,target=/scratch,size=8m echo temp > /scratch/t && cat /scratch/t > /tmpfs-saw.txt\n' });
    await ferryOk(root, ['build', '-t', 'feat/tmpfs', tmp]);
    expect(await sh('feat/tmpfs', 'cat /tmpfs-saw.txt; find /scratch -mindepth 1 | wc -l')).toBe('temp\n0\n');
    const other = join(work, 'secret-mount');
    await writeContext(other, { Dockerfile: 'FROM base\nRUN --mount=type=secret,id=x cat /run/secrets/x\n' });
    const r = await runFerry(['--root', root, 'build', other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Dockerfile:2: RUN --mount=type=secret is not supported by ferry build yet/);
  }, 60_000);

  it('RUN --mount=type=bind shows the context as .dockerignore filters it (or a stage), read-only, out of the layer, in the cache key', async () => {
    const context = join(work, 'bind-mount');
    await writeContext(context, {
      Dockerfile: [
        'FROM base AS builder',
        'RUN mkdir /out && echo from-stage > /out/x',
        'FROM base',
        'RUN --mount=type=bind,target=/src --mount=type=bind,from=builder,source=/out,target=/b \\',
        '    ls -A /src > /listing && cat /src/a.txt /b/x >> /listing && (touch /src/new 2>/dev/null && echo writable || echo read-only) >> /listing',
        '',
      ].join('\n'),
      '.dockerignore': 'secret.txt\n',
      'a.txt': 'a one\n',
      'secret.txt': 'not for the build\n',
    });
    await ferryOk(root, ['build', '-t', 'feat/bind', context]);
    expect(await sh('feat/bind', 'cat /listing; find /src /b -mindepth 1 | wc -l')).toBe('.dockerignore\nDockerfile\na.txt\na one\nfrom-stage\nread-only\n0\n');
    await writeFile(join(context, 'a.txt'), 'a two\n');
    const again = await ferryOk(root, ['build', '-t', 'feat/bind', context]);
    expect(again).not.toMatch(/RUN --mount=type=bind,target=\/src[^\n]*\n--> CACHED/);
    expect(await sh('feat/bind', 'sed -n 4p /listing')).toBe('a two\n');
  }, 60_000);

  it('-f - reads the Dockerfile from stdin, and errors name it "-"', async () => {
    const context = join(work, 'stdin');
    await writeContext(context, { 'a.txt': 'from stdin build\n' });
    const r = await runFerry(['--root', root, 'build', '-q', '-f', '-', '-t', 'feat/stdin', context], { input: 'FROM base\nCOPY a.txt /a.txt\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(await sh('feat/stdin', 'cat /a.txt')).toBe('from stdin build\n');
    const bad = await runFerry(['--root', root, 'build', '-f', '-', context], { input: 'FROM base\nNOPE\n' });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^ferry: -:2: unknown instruction: NOPE/m);
  }, 60_000);

  it('COPY --from an image of the store, WORKDIR and USER seen by RUN, exec-form RUN', async () => {
    const context = join(work, 'from-image');
    await writeContext(context, {
      Dockerfile: [
        'FROM base',
        'COPY --from=tools /opt/tools/ /opt/borrowed/',
        'WORKDIR /home/app/work',
        'USER app',
        'RUN ["/bin/sh", "-c", "pwd > /tmp/where.txt && id -u >> /tmp/where.txt"]',
        '',
      ].join('\n'),
    });
    await ferryOk(root, ['build', '-t', 'feat/from-image', context]);
    expect(await sh('feat/from-image', 'ls /opt/borrowed; cat /tmp/where.txt; stat -c %U /tmp/where.txt')).toBe('tool.sh\n/home/app/work\n1000\napp\n');
  }, 60_000);

  it('COPY into a directory reached through a symlink writes where it really is and keeps the link', async () => {
    const context = join(work, 'through-link');
    await writeContext(context, { Dockerfile: 'FROM base\nRUN mkdir /real && ln -s /real /link\nCOPY msg.txt /link/\nCOPY msg.txt /link/sub/renamed.txt\n', 'msg.txt': 'via link\n' });
    await ferryOk(root, ['build', '-t', 'feat/link', context]);
    expect(await sh('feat/link', 'readlink /link; cat /real/msg.txt /real/sub/renamed.txt')).toBe('/real\nvia link\nvia link\n');
  }, 60_000);

  it('FROM --platform and --platform pick the base for that platform; TARGETARCH follows the build platform', async () => {
    await ferryOk(root, ['import', '--platform', 'linux/amd64,linux/arm64', `oci:${layout.dir}:multi`]);
    const context = join(work, 'platform');
    await writeContext(context, { Dockerfile: 'FROM --platform=linux/arm64 multi\nARG TARGETARCH\nLABEL target=$TARGETARCH\nCOPY Dockerfile /copied\n' });
    await ferryOk(root, ['build', '-t', 'feat/arm', context]);
    await ferryOk(root, ['build', '--platform', 'linux/arm64', '-t', 'feat/arm2', context]);
    for (const [name, target] of [['feat/arm', process.arch === 'arm64' ? 'arm64' : 'amd64'], ['feat/arm2', 'arm64']] as const) {
      const inspect = JSON.parse(await ferryOk(root, ['inspect', name])) as { platform: string; config: string };
      expect(inspect.platform).toMatch(/^linux\/arm64/);
      const config = JSON.parse(await readFile(join(root, 'blobs', 'sha256', inspect.config.slice('sha256:'.length)), 'utf8')) as { config: { Labels: Record<string, string> } };
      expect(config.config.Labels.target).toBe(target);
    }
  }, 60_000);

  it('a built image exports, imports into another store and runs there, and pushes to a registry', async () => {
    const context = join(work, 'travel');
    await writeContext(context, { Dockerfile: 'FROM base\nCOPY msg.txt /msg.txt\nRUN rm /etc/app/keep.conf\nCMD ["cat", "/msg.txt"]\n', 'msg.txt': 'carried across\n' });
    const id = imageId(await ferryOk(root, ['build', '-t', 'feat/travel:1', context]));
    const bundle = join(work, 'travel.tar.zst');
    await ferryOk(root, ['export', '-o', bundle, 'feat/travel:1'], { FERRY_CACHE_DIR: join(work, 'cache') });
    const there = join(work, 'there');
    await ferryOk(there, ['import', bundle]);
    expect(await ferryOk(there, ['run', '--rm', 'feat/travel:1'])).toBe('carried across\n');
    expect(await ferryOk(there, ['run', '--rm', '--entrypoint', '/bin/sh', 'feat/travel:1', '-c', 'test -e /etc/app/keep.conf && echo kept || echo deleted'])).toBe('deleted\n');
    expect(JSON.parse(await ferryOk(there, ['inspect', 'feat/travel:1'])) as { digest: string }).toMatchObject({ digest: id });
    expect(await ferryOk(root, ['fsck'])).toMatch(/0 problems/);
    // Pushed to a registry it keeps its digest, and skopeo reads it there.
    const registry = await startRegistry();
    try {
      await ferryOk(root, ['push', 'feat/travel:1', `${registry.host}/feat/travel:1`]);
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/feat/travel:1`]);
      expect((JSON.parse(stdout) as { Digest: string }).Digest).toBe(id);
    } finally {
      await registry.stop();
    }
  }, 60_000);
});
