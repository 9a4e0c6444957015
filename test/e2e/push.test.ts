import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { runFerry } from '../helpers/ferry.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { fileTree } from '../helpers/tree.js';

/**
 * `ferry push` as a user runs it: a bundle exported from a registry, imported into a store and
 * pushed with --all into a fresh registry gives the same filesystems (skopeo copy + umoci unpack);
 * an as-pulled bundle pushed with --bundle keeps every manifest digest the source registry served.
 */
const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let layout: TestLayout;
let source: RunningRegistry;
let rawBundle: string;
let pulledBundle: string;
const NAMES = ['app', 'tools', 'multi'] as const;

async function ferry(args: string[]): Promise<string> {
  const r = await runFerry(args, { env: { FERRY_CACHE_DIR: join(work, 'pull-cache') } });
  expect(r.code, `ferry ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}


/** skopeo copy (verifying every blob) of one platform, then umoci unpack: the image's filesystem. */
async function unpacked(ref: string, name: string, arch?: string): Promise<Record<string, string>> {
  const dir = join(work, 'copies', name);
  await mkdir(join(work, 'copies'), { recursive: true });
  const platform = arch === undefined ? [] : ['--override-arch', arch];
  await run('skopeo', ['copy', '--quiet', ...platform, '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:x`]);
  await run('umoci', ['unpack', '--rootless', '--image', `${dir}:x`, join(work, 'unpacked', name)]);
  return fileTree(join(work, 'unpacked', name, 'rootfs'));
}

async function registryDigest(ref: string): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer' });
  return sha256(stdout);
}

beforeAll(async () => {
  work = await makeTempDir('e2e-push');
  layout = await buildTestLayout(join(work, 'layout'));
  source = await startRegistry();
  await pushTestImages(layout, source);
  const refs = NAMES.map((n) => `${source.host}/test/${n}:latest`);
  rawBundle = join(work, 'raw.tar.zst');
  pulledBundle = join(work, 'pulled.tar.zst');
  await ferry(['export', '-q', '--platform', 'all', '-o', rawBundle, ...refs]);
  await ferry(['export', '-q', '--platform', 'all', '--layers', 'as-pulled', '-o', pulledBundle, ...refs]);
});

afterAll(async () => {
  await source?.stop();
  await removeDir(work);
});

describe('ferry push', () => {
  it('push --bundle of an as-pulled bundle: every manifest digest is the one the source registry served', async () => {
    const dest = await startRegistry();
    try {
      const out = await ferry(['push', '--bundle', pulledBundle, `${dest.host}/mirror`]);
      for (const name of NAMES) {
        expect(out).toContain(`pushed ${dest.host}/mirror/test/${name}:latest`);
      }
      expect(out).not.toMatch(/->/); // nothing rewritten
      for (const name of ['app', 'tools'] as const) {
        expect(await registryDigest(`${dest.host}/mirror/test/${name}:latest`)).toBe(await registryDigest(`${source.host}/test/${name}:latest`));
      }
      for (const key of ['multi@linux/amd64', 'multi@linux/arm64']) {
        const digest = layout.images[key]!.manifestDigest;
        expect(await registryDigest(`${dest.host}/mirror/test/multi@${digest}`)).toBe(digest);
      }
      // The bundle carries the source's index: pushed byte for byte, so the tag keeps its digest.
      expect(await registryDigest(`${dest.host}/mirror/test/multi:latest`)).toBe(await registryDigest(`${source.host}/test/multi:latest`));
      expect(await registryDigest(`${dest.host}/mirror/test/multi:latest`)).toBe(layout.refs.multi);
      // Pushed again: every blob is present, nothing is sent.
      const again = await ferry(['push', '--bundle', pulledBundle, `${dest.host}/mirror`]);
      expect(again).toMatch(/mirror\/test\/app:latest \S+ \(0 uploaded/);
    } finally {
      await dest.stop();
    }
  });

  it('bundle -> import -> push --all into a fresh registry: skopeo copy + umoci unpack of every image gives the source content', async () => {
    const root = join(work, 'store');
    await ferry(['--root', root, 'import', rawBundle]);
    const dest = await startRegistry();
    try {
      const out = await ferry(['--root', root, 'push', '--all', `${dest.host}/site`]);
      // Raw layers were imported unpacked; their tar-splits give back the original tars, so the
      // diffIds and the config (docker's image ID) stay; layers are compressed anew.
      expect(out).toMatch(new RegExp(`pushed ${dest.host.replace(/\./g, '\\.')}/site/test/app:latest`));
      for (const name of ['app', 'tools'] as const) {
        const { stdout: rawConfig } = await run('skopeo', ['inspect', '--tls-verify=false', '--config', '--raw', `docker://${dest.host}/site/test/${name}:latest`], { encoding: 'buffer' });
        expect(`sha256:${createHash('sha256').update(rawConfig).digest('hex')}`).toBe(layout.images[name]!.configDigest);
      }
      const catalog = JSON.parse(await (await fetch(`http://${dest.host}/v2/_catalog`)).text()) as { repositories: string[] };
      expect(catalog.repositories.sort()).toEqual(NAMES.map((n) => `site/test/${n}`).sort());
      for (const name of ['app', 'tools'] as const) {
        const want = await unpacked(`${source.host}/test/${name}:latest`, `src-${name}`);
        expect(await unpacked(`${dest.host}/site/test/${name}:latest`, `dst-${name}`)).toEqual(want);
      }
      for (const arch of ['amd64', 'arm64']) {
        const want = await unpacked(`${source.host}/test/multi:latest`, `src-multi-${arch}`, arch);
        expect(await unpacked(`${dest.host}/site/test/multi:latest`, `dst-multi-${arch}`, arch)).toEqual(want);
      }
      // A second push finds everything in place (compressed forms are cached in the store).
      const again = await ferry(['--root', root, 'push', '--all', `${dest.host}/site`]);
      expect(again.match(/\(0 uploaded/g)?.length).toBe(3);
      // push IMAGE DEST: one image to a name of its own; digests as --all gave them.
      const one = await ferry(['--root', root, 'push', '-q', `${source.host}/test/app:latest`, `${dest.host}/team/app:v2`]);
      expect(one.trim()).toBe(await registryDigest(`${dest.host}/site/test/app:latest`));
      expect(await registryDigest(`${dest.host}/team/app:v2`)).toBe(one.trim());
    } finally {
      await dest.stop();
    }
  });

  it('push --all through registry faults (an upload cut mid-body, 500s): retried, and every image verifies', async () => {
    const root = join(work, 'store-faults');
    await ferry(['--root', root, 'import', pulledBundle]);
    const dest = await startRegistry();
    const proxy = await startFaultProxy(dest.host);
    try {
      proxy.setFaults([
        { kind: 'cut', match: /^(PATCH|PUT) .*\/blobs\/uploads\//, afterBytes: 16 * 1024 },
        { kind: 'status', match: /^PUT .*\/blobs\/uploads\//, status: 500 },
        { kind: 'status', match: /^PUT .*\/manifests\//, status: 503 },
      ]);
      await ferry(['--root', root, 'push', '-q', '--all', proxy.host]);
      expect(proxy.pendingFaults()).toEqual([]);
      // The index imported with the bundle goes up as it was.
      expect(await registryDigest(`${dest.host}/test/multi:latest`)).toBe(layout.refs.multi);
      for (const name of ['app', 'tools'] as const) {
        // As pulled: the same digests, and skopeo's copy checks every blob.
        expect(await registryDigest(`${dest.host}/test/${name}:latest`)).toBe(layout.refs[name]);
        await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dest.host}/test/${name}:latest`, `oci:${join(work, 'fault-copies')}:${name}`]);
      }
    } finally {
      await proxy.stop();
      await dest.stop();
    }
  });

  it('refuses unclear destinations with usage errors', async () => {
    const r = await runFerry(['push', '--all']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/give exactly one REGISTRY\[\/PREFIX\]/);
    const z = await runFerry(['push', '--bundle', rawBundle, '--compress', 'lz4', '127.0.0.1:1']);
    expect(z.code).toBe(2);
    expect(z.stderr).toMatch(/--compress "lz4": use gzip or zstd/);
  });
});
