import { spawn } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FERRY_BIN, runFerry } from '../helpers/ferry.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { countBlobGets, startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * `ferry pull`: registry straight into the store. The store it makes is the one export + import
 * of the same images makes (same names, digests, platforms; fsck --deep clean), from the basic-
 * and token-auth registries and from a registry that `ferry push --all` fed; a pull killed midway
 * and run again fetches only the blobs it lacked (counted in the registry's access log).
 */
let work: string;
let layout: TestLayout;
let basic: RunningRegistry;
let token: RunningRegistry;
let plain: RunningRegistry;
let dockerConfig: string;

const NAMES = ['app', 'tools', 'multi'] as const;
const refsOf = (host: string, prefix = 'test'): string[] => NAMES.map((n) => `${host}/${prefix}/${n}:latest`);
const authOf = (r: RunningRegistry): string => Buffer.from(`${r.username!}:${r.password!}`).toString('base64');

beforeAll(async () => {
  work = await makeTempDir('e2e-pull');
  layout = await buildTestLayout(join(work, 'layout'));
  [basic, token, plain] = await Promise.all([startRegistry({ auth: 'basic' }), startRegistry({ auth: 'token' }), startRegistry()]);
  await Promise.all([pushTestImages(layout, basic), pushTestImages(layout, token), pushTestImages(layout, plain)]);
  dockerConfig = join(work, 'docker');
  await mkdir(dockerConfig);
  await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [basic.host]: { auth: authOf(basic) }, [token.host]: { auth: authOf(token) } } }));
}, 120_000);

afterAll(async () => {
  await Promise.all([basic?.stop(), token?.stop(), plain?.stop()]);
  await removeDir(work);
});

function envFor(name: string): Record<string, string> {
  return { FERRY_ROOT: join(work, name, 'store'), FERRY_CACHE_DIR: join(work, name, 'cache'), DOCKER_CONFIG: dockerConfig };
}

async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await runFerry(args, { env });
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

interface ImageRow {
  name: string;
  platform: string;
  manifestDigest: string;
  configDigest: string;
}

/** What `ferry images --json` says, in a stable order and without times. */
async function images(env: Record<string, string>): Promise<Array<Pick<ImageRow, 'name' | 'platform' | 'manifestDigest' | 'configDigest'>>> {
  const rows = JSON.parse(await ok(['images', '--json'], env)) as ImageRow[];
  return rows
    .map(({ name, platform, manifestDigest, configDigest }) => ({ name, platform, manifestDigest, configDigest }))
    .sort((a, b) => `${a.name} ${a.platform}`.localeCompare(`${b.name} ${b.platform}`));
}

async function deepClean(env: Record<string, string>): Promise<void> {
  expect(await ok(['fsck', '--deep'], env)).toMatch(/0 problems/);
}

/** The store export + import of `refs` makes, to compare a pull with. */
async function exportImport(name: string, refs: string[], platforms: string): Promise<Record<string, string>> {
  const env = envFor(name);
  const bundle = join(work, `${name}.tar.zst`);
  await ok(['export', '-q', '--pull', '--platform', platforms, '-o', bundle, ...refs], env);
  await ok(['import', '-q', bundle], env);
  return env;
}

describe('ferry pull', () => {
  it.each([
    ['basic', (): RunningRegistry => basic],
    ['token', (): RunningRegistry => token],
  ])('from the %s-auth registry gives the store export + import gives', async (kind, registry) => {
    const refs = refsOf(registry().host);
    const platforms = 'linux/amd64,linux/arm64';
    const pulled = envFor(`pull-${kind}`);
    const out = await ok(['pull', '--platform', platforms, ...refs], pulled);
    expect(out).toMatch(new RegExp(`pulled .*test/app:latest \\(linux/amd64\\) ${layout.refs.app}`));
    const reference = await exportImport(`export-${kind}`, refs, platforms);
    const got = await images(pulled);
    expect(got).toEqual(await images(reference));
    expect(got.find((i) => i.name.endsWith('/test/app:latest'))?.manifestDigest).toBe(layout.refs.app);
    expect(got.filter((i) => i.name.endsWith('/test/multi:latest')).map((i) => i.platform).sort()).toEqual(['linux/amd64', 'linux/arm64']);
    await deepClean(pulled);
    // The image runs from the pulled store, and a second pull finds everything present.
    const again = await ok(['pull', '--platform', platforms, ...refs], pulled);
    expect(again).toMatch(/ 0 layers unpacked/);
    const r = await runFerry(['run', '--rm', refs[1]!, '/opt/tools/tool.sh', 'pulled'], { env: pulled });
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);

  it('from a registry that ferry push --all fed, as export + import of the same images', async () => {
    const source = await exportImport('fed-source', refsOf(plain.host), 'all');
    const fed = await startRegistry();
    try {
      await ok(['push', '--all', `${fed.host}/site`], source);
      // push --all keeps the repository path under the prefix: HOST/test/app -> FED/site/test/app.
      const refs = refsOf(fed.host, 'site/test');
      const pulled = envFor('pull-fed');
      await ok(['pull', '--platform', 'all', ...refs], pulled);
      const reference = await exportImport('export-fed', refs, 'all');
      expect(await images(pulled)).toEqual(await images(reference));
      await deepClean(pulled);
    } finally {
      await fed.stop();
    }
  }, 120_000);

  it('a pull killed midway and run again fetches only the blobs it lacked', async () => {
    const proxy: FaultProxy = await startFaultProxy(plain.host);
    const env = envFor('pull-kill');
    try {
      const app = layout.images.app!;
      const [first, second] = [app.layers[0]!.digest, app.layers[1]!.digest];
      // The second layer's blob keeps failing (the client retries): ferry is killed while it waits.
      proxy.setFaults([{ kind: 'status', match: new RegExp(`GET /v2/test/app/blobs/${second}`), status: 503, times: 1000 }]);
      const child = spawn(process.execPath, [FERRY_BIN, 'pull', '-j', '1', `${proxy.host}/test/app:latest`], { env: { ...process.env, ...env }, stdio: 'ignore' });
      const cached = join(env.FERRY_CACHE_DIR!, 'blobs', 'sha256');
      for (let i = 0; i < 300 && !(await readdir(cached).catch(() => [] as string[])).includes(first.slice(7)); i++) await new Promise((r) => setTimeout(r, 100));
      expect(await readdir(cached)).toContain(first.slice(7));
      const closed = new Promise<NodeJS.Signals | null>((r) => child.once('close', (_code, signal) => r(signal)));
      child.kill('SIGKILL');
      expect(await closed).toBe('SIGKILL');
      proxy.setFaults([]);

      const before = await plain.log();
      const out = await ok(['pull', `${proxy.host}/test/app:latest`], env);
      expect(out).toMatch(/fetched 1 blobs .*, 1 from the pull cache/);
      const after = await plain.log();
      expect(countBlobGets(after, first)).toBe(countBlobGets(before, first));
      expect(countBlobGets(after, second)).toBe(countBlobGets(before, second) + 1);
      await deepClean(env);
    } finally {
      await proxy.stop();
    }
  }, 120_000);

  it('ferry run of an image that is not in the store names ferry pull and ferry import', async () => {
    const r = await runFerry(['run', '--rm', 'nosuchimage:1'], { env: envFor('run-missing') });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/image nosuchimage:1 is not in the store/);
    expect(r.stderr).toMatch(/ferry pull nosuchimage:1/);
    expect(r.stderr).toMatch(/ferry import/);
  });
});
