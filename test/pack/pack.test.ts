import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runFerry } from '../helpers/ferry.js';
import { buildTestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { buildPack, exec, glibcVersions, inChroot, minimalDebian, PACK, PACK_DIR, PACK_WORK, versionAbove, type ChrootResult } from './fixture.js';

/**
 * The one-file ferry (issue 12): `npm run pack` builds it, and it runs on a Debian that has no
 * node, no npm and no compiler, entered with chroot (as root, /proc mounted), also with /tmp noexec.
 */

const PARTS = ['ferry-launch', 'ferry_native.node', 'zstd.node'] as const;

interface PackManifest {
  ferryVersion: string;
  platform: string;
  parts: Record<string, { sha256: string; size: number }>;
}

let work: string;
let rootfs: string;
let share: string;
let manifest: PackManifest;

beforeAll(async () => {
  work = await makeTempDir('pack');
  share = join(work, 'share');
  await mkdir(share);
  const [layout] = await Promise.all([buildTestLayout(join(work, 'layout')), buildPack(), minimalDebian().then((r) => (rootfs = r))]);
  const exported = await runFerry(['export', '-q', '-o', join(share, 'images.tar.zst'), `oci:${layout.dir}:base`]);
  expect(exported.code, exported.stderr).toBe(0);
  manifest = JSON.parse(await readFile(join(PACK_WORK, 'pack.json'), 'utf8')) as PackManifest;
}, 20 * 60_000);

afterAll(async () => {
  await removeDir(work);
});

/** The session every chroot test runs, in this order. */
const SESSION = [
  'command -v node npm gcc cc c++ make; true',
  'ferry --version',
  'ferry import /mnt/share/images.tar.zst',
  'ferry images',
  'ferry run --rm base echo hello from the other side of the air gap',
  'ferry fsck',
  'ferry doctor',
  "find /usr/local/lib/ferry -type f -printf '%f\\n'",
];

function expectSession(results: ChrootResult[]): void {
  const [tools, version, imported, images, run, fsck, doctor, parts] = results;
  expect(tools!.stdout.trim(), 'the root filesystem has no node, npm or compiler').toBe('');
  expect(version!.code, version!.stderr).toBe(0);
  expect(version!.stdout).toMatch(/^\d+\.\d+\.\d+ \(packed linux-x64, Node\.js v2[2-9]\.\d+\.\d+\)\n$/);
  expect(imported!.code, imported!.stderr).toBe(0);
  expect(images!.code, images!.stderr).toBe(0);
  expect(images!.stdout).toMatch(/base/);
  expect(run!.code, run!.stderr).toBe(0);
  expect(run!.stdout).toBe('hello from the other side of the air gap\n');
  expect(fsck!.code, fsck!.stdout + fsck!.stderr).toBe(0);
  expect(doctor!.code, doctor!.stdout + doctor!.stderr).toBe(0);
  expect(doctor!.stdout).toMatch(/^ok +overlay/m);
  expect(parts!.stdout.split(/\s+/).filter((n) => n !== '').sort()).toEqual([...PARTS].sort());
}

describe('the packed executable', () => {
  it('runs in a minimal Debian root (no node, npm or compiler) entered with chroot: --version, import, images, run --rm, fsck, doctor', async () => {
    const dir = join(work, 'chroot');
    const results = await inChroot(rootfs, SESSION, { noexecTmp: false, share, work: dir });
    expectSession(results);
    // The parts it runs were extracted by hash into a root-only directory, and are the packed ones.
    const base = join(dir, 'upper', 'usr', 'local', 'lib', 'ferry');
    for (const name of PARTS) {
      const sha = manifest.parts[name]!.sha256;
      const { stdout } = await exec('sha256sum', [join(base, `sha256-${sha}`, name)]);
      expect(stdout.split(' ')[0]).toBe(sha);
      const { stdout: mode } = await exec('stat', ['-c', '%a %U', base, join(base, `sha256-${sha}`), join(base, `sha256-${sha}`, name)]);
      expect(mode.trim().split('\n')).toEqual(['700 root', '700 root', '700 root']);
    }
  });

  it('runs the same with /tmp mounted noexec', async () => {
    const results = await inChroot(rootfs, [...SESSION, 'grep " /tmp " /proc/self/mounts'], { noexecTmp: true, share, work: join(work, 'chroot-noexec') });
    expectSession(results);
    expect(results.at(-1)!.stdout).toMatch(/noexec/);
  });

  it('doctor names the one thing missing in a chroot whose root is no mount point, with the fix, and exits 1', async () => {
    const [doctor] = await inChroot(rootfs, ['ferry doctor'], { noexecTmp: false, share, work: join(work, 'chroot-plain'), rootIsMountPoint: false });
    expect(doctor!.code, doctor!.stdout + doctor!.stderr).toBe(1);
    expect(doctor!.stdout).toMatch(/^FAIL +overlay +the launcher's test run failed before the overlay: make \/ private: Invalid argument$/m);
    expect(doctor!.stdout).toMatch(/fix: ferry needs its root directory to be a mount point: inside a chroot, mount --bind the new root onto itself/);
    expect(doctor!.stdout.match(/^FAIL/gm)).toHaveLength(1);
  });

  it('needs at most GLIBC_2.28 in every ELF it carries, and only the C library and C++ runtime', async () => {
    const problems: string[] = [];
    const check = async (what: string, path: string): Promise<boolean> => {
      const { dynamic, versions, needed } = await glibcVersions(path);
      for (const v of versions) if (versionAbove(v, '2.28')) problems.push(`${what} needs GLIBC_${v}`);
      for (const n of needed) if (!/^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64)\.so\.\d+$/.test(n)) problems.push(`${what} needs ${n}`);
      return dynamic;
    };
    expect(await check('ferry-linux-x64 (Node)', PACK)).toBe(true);
    for (const name of PARTS) {
      const dynamic = await check(name, join(PACK_WORK, name === 'zstd.node' ? (await readdir(PACK_WORK)).find((f) => /^zstd-[0-9a-f]+\.node$/.test(f))! : name));
      // The launcher is linked statically with musl: nothing from the host's C library at all.
      if (name === 'ferry-launch') expect(dynamic).toBe(false);
    }
    expect(problems).toEqual([]);
  });

  it('ignores NODE_OPTIONS and OPENSSL_CONF: environment cannot load code into it', async () => {
    const dir = await makeTempDir('pack-env');
    try {
      const marker = join(dir, 'INJECTED');
      await writeFile(join(dir, 'evil.js'), `require('fs').writeFileSync(${JSON.stringify(marker)}, 'js')\n`);
      await writeFile(join(dir, 'evil.mjs'), `import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(marker)}, 'esm')\n`);
      // An OpenSSL provider is a shared library: its constructor runs when OpenSSL loads the config.
      await writeFile(join(dir, 'evil.c'), `#include <stdio.h>\n__attribute__((constructor)) static void hit(void) { FILE *f = fopen(${JSON.stringify(marker)}, "w"); if (f) fclose(f); }\nint OSSL_provider_init(void) { return 0; }\n`);
      await exec('gcc', ['-shared', '-fPIC', join(dir, 'evil.c'), '-o', join(dir, 'evil.so')]);
      await writeFile(join(dir, 'openssl.cnf'), `nodejs_conf = init\nopenssl_conf = init\n[init]\nproviders = prov\n[prov]\nevil = evil_sect\n[evil_sect]\nmodule = ${join(dir, 'evil.so')}\nactivate = 1\n`);
      const env = { ...process.env, NODE_OPTIONS: `--require ${join(dir, 'evil.js')} --import ${join(dir, 'evil.mjs')}`, OPENSSL_CONF: join(dir, 'openssl.cnf') };
      const { stdout } = await exec(PACK, ['keygen', '-o', join(dir, 'k')], { env });
      expect(stdout).toMatch(/private key/);
      await expect(readFile(marker)).rejects.toThrow(/ENOENT/);
      // ... while plain node would have run it: the test can see an injection.
      await exec(process.execPath, ['-e', '0'], { env: { ...process.env, NODE_OPTIONS: `--require ${join(dir, 'evil.js')}` } });
      expect(await readFile(marker, 'utf8')).toBe('js');
    } finally {
      await removeDir(dir);
    }
  });

  it('carries a code cache that a container start trained at pack time, and its V8 takes it', async () => {
    // The tests run as root, so the pack trained its cache (scripts/pack/pack.js, trainCodeCache).
    const config = JSON.parse(await readFile(join(PACK_WORK, 'sea-config.json'), 'utf8')) as { main: string; assets: Record<string, string> };
    expect(config.main).toBe(join(PACK_WORK, 'loader.cjs'));
    expect(Object.keys(config.assets)).toEqual(expect.arrayContaining(['ferry-function.js', 'ferry.codecache']));
    const trained = (await readFile(config.assets['ferry.codecache']!)).length;
    const { stdout, stderr } = await exec(PACK, ['--version'], { env: { ...process.env, FERRY_TIMING: '1' } });
    expect(stdout).toMatch(/packed linux-x64/);
    expect(stderr).toContain(`ferry: code cache accepted (${trained} bytes)`);
  });

  it('extracts a part again when the file on disk no longer matches its hash', async () => {
    const doctor = (): Promise<{ stdout: string; stderr: string }> => exec(PACK, ['doctor', '--json']).catch((err: { stdout: string; stderr: string }) => err);
    await doctor();
    const sha = manifest.parts['ferry_native.node']!.sha256;
    const path = join('/usr/local/lib/ferry', `sha256-${sha}`, 'ferry_native.node');
    const original = await readFile(path);
    const tampered = Buffer.from(original);
    tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 0xff, tampered.length - 1);
    await writeFile(path, tampered);
    const { stderr } = await doctor();
    expect(stderr).toContain(`${path} did not match its sha256; extracting it again`);
    expect((await readFile(path)).equals(original)).toBe(true);
  });

  it('is carried by export --with-ferry --split 50M --sign: beside the volumes, in the .sha256, verified, a flipped byte named', async () => {
    const dir = await makeTempDir('pack-carry');
    try {
      const layout = await buildTestLayout(join(dir, 'layout'), { bigLayerBytes: 120 * 1024 * 1024 });
      const keys = await runFerry(['keygen', '-o', join(dir, 'key')]);
      expect(keys.code, keys.stderr).toBe(0);
      const out = join(dir, 'stick');
      await exec('mkdir', ['-p', out]);
      // From a source checkout: ferry takes the executable `npm run pack` made.
      const exported = await runFerry(['export', '-q', '--with-ferry', '--split', '50M', '--sign', join(dir, 'key.pem'), '-o', join(out, 'b.tar.zst'), `oci:${layout.dir}:big`]);
      expect(exported.code, exported.stderr).toBe(0);
      const files = (await readdir(out)).sort();
      expect(files).toEqual(['b.tar.zst.001', 'b.tar.zst.002', 'b.tar.zst.003', 'b.tar.zst.sha256', 'ferry-linux-x64']);
      const { stdout: sums } = await exec('sha256sum', ['-c', 'b.tar.zst.sha256'], { cwd: out });
      expect(sums).toContain('ferry-linux-x64: OK');
      expect((await exec('stat', ['-c', '%a', join(out, 'ferry-linux-x64')])).stdout.trim()).toBe('755');

      const verified = await runFerry(['verify', '--key', join(dir, 'key.pub.pem'), join(out, 'b.tar.zst')]);
      expect(verified.code, verified.stderr).toBe(0);
      expect(verified.stdout).toContain('signature verified');
      expect(verified.stdout).toContain(`${join(out, 'ferry-linux-x64')}: OK: sha256 matches ferry-bundle.json, covered by the signature`);

      // The packed executable copies itself, and its copy verifies too.
      const again = join(dir, 'again');
      await exec('mkdir', ['-p', again]);
      await exec(PACK, ['export', '-q', '--with-ferry', '--sign', join(dir, 'key.pem'), '-o', join(again, 'b.tar.zst'), `oci:${layout.dir}:base`]);
      expect((await readFile(join(again, 'ferry-linux-x64'))).equals(await readFile(PACK))).toBe(true);
      expect((await exec(PACK, ['verify', '--key', join(dir, 'key.pub.pem'), join(again, 'b.tar.zst')])).stdout).toContain('covered by the signature');

      const exe = join(out, 'ferry-linux-x64');
      const bytes = await readFile(exe);
      bytes.writeUInt8(bytes.readUInt8(bytes.length >> 1) ^ 0x01, bytes.length >> 1);
      await writeFile(exe, bytes);
      const broken = await runFerry(['verify', '--key', join(dir, 'key.pub.pem'), join(out, 'b.tar.zst')]);
      expect(broken.code).toBe(1);
      expect(broken.stderr).toMatch(/ferry: ferry-linux-x64 is damaged: its sha256 [0-9a-f]{64} does not match [0-9a-f]{64} in ferry-bundle\.json/);
      expect(broken.stderr).toContain('hint: copy ferry-linux-x64 again from the source medium');
      const { stdout: plain } = await exec('sha256sum', ['-c', 'b.tar.zst.sha256'], { cwd: out }).catch((err: { stdout: string }) => err);
      expect(plain).toContain('ferry-linux-x64: FAILED');
    } finally {
      await removeDir(dir);
    }
  });
});

describe('the arm64 pack (cross-built: gcc-aarch64-linux-gnu; run here under qemu-user-static)', () => {
  it('builds ferry-linux-arm64 with the same limits, and it imports, lists and checks a bundle', async () => {
    await exec(process.execPath, [join(REPO_ROOT, 'scripts', 'pack', 'pack.js'), '--arch', 'arm64'], { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024, timeout: 15 * 60_000 });
    const arm = join(PACK_DIR, 'ferry-linux-arm64');
    const armWork = join(PACK_DIR, 'work-arm64');
    const armManifest = JSON.parse(await readFile(join(armWork, 'pack.json'), 'utf8')) as PackManifest;
    expect(armManifest.platform).toBe('linux-arm64');
    const problems: string[] = [];
    const zstd = (await readdir(armWork)).find((f) => /^zstd-[0-9a-f]+\.node$/.test(f))!;
    for (const file of [arm, join(armWork, 'ferry-launch'), join(armWork, 'ferry_native.node'), join(armWork, zstd)]) {
      const { versions, needed, dynamic } = await glibcVersions(file, 'aarch64-linux-gnu-objdump');
      for (const v of versions) if (versionAbove(v, '2.28')) problems.push(`${file} needs GLIBC_${v}`);
      for (const n of needed) if (!/^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-aarch64)\.so\.\d+$/.test(n)) problems.push(`${file} needs ${n}`);
      if (file.endsWith('ferry-launch')) expect(dynamic).toBe(false);
    }
    expect(problems).toEqual([]);
    const root = join(work, 'arm-root');
    const qemu = async (...args: string[]): Promise<string> => (await exec('qemu-aarch64-static', ['-L', '/usr/aarch64-linux-gnu', arm, ...args], { maxBuffer: 16 * 1024 * 1024, timeout: 5 * 60_000 })).stdout;
    expect(await qemu('--version')).toMatch(/^\d+\.\d+\.\d+ \(packed linux-arm64, Node\.js v2[2-9]\.\d+\.\d+\)\n$/);
    await qemu('--root', root, 'import', '-q', join(share, 'images.tar.zst'));
    expect(await qemu('--root', root, 'images')).toMatch(/base/);
    expect(await qemu('--root', root, 'fsck')).toMatch(/0 problems/);
  }, 20 * 60_000);
});

