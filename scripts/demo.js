#!/usr/bin/env node
// ferry's offline demo: build a tiny image from files already on this host, serve it from ferry's
// own registry server on loopback, then walk the main job: inspect -> export -> ls/verify -> import
// -> run, as far as those parts are built. Needs no network and nothing but Node.js.
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { create } from 'tar';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ferryBin = join(repo, 'bin', 'ferry.js');
const sha256 = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const step = (text) => console.log(`\n\x1b[1m==> ${text}\x1b[0m`);

/** True when an ELF file has no PT_INTERP program header (a static executable). */
async function isStaticElf(path) {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2) return false; // ELF64 only
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    await fh.read(ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3) return false;
    return true;
  } finally {
    await fh.close();
  }
}

/** Fill `root` with a userland: static busybox when the host has one, else sh and its libraries. */
async function buildRootfs(root) {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'dev', 'sys']) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n');
  await writeFile(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeFile(join(root, 'etc/motd'), 'carried across the air gap by ferry\n');
  const busybox = process.env.FERRY_DEMO_NO_BUSYBOX ? undefined : ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (busybox && (await isStaticElf(realpathSync(busybox)))) {
    await copyFile(realpathSync(busybox), join(root, 'bin/busybox'));
    for (const app of ['sh', 'ls', 'cat', 'echo', 'id', 'hostname', 'uname', 'ps', 'mount', 'env']) {
      await symlink('busybox', join(root, 'bin', app));
    }
    return `static busybox from ${busybox}`;
  }
  // No static busybox: the host's sh plus exactly the shared libraries ldd says it needs.
  const sh = realpathSync('/bin/sh');
  await copyFile(sh, join(root, 'bin/sh'));
  const libs = execFileSync('ldd', [sh], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /(\/\S+)\s+\(0x/.exec(l)?.[1])
    .filter(Boolean);
  for (const lib of libs) {
    const target = join(root, lib);
    await mkdir(dirname(target), { recursive: true });
    await copyFile(realpathSync(lib), target);
  }
  return `host ${sh} with ${libs.length} libraries`;
}

/** Write a one-layer OCI image layout for the rootfs; returns the manifest digest. */
async function writeLayout(root, layoutDir, refName) {
  await mkdir(layoutDir, { recursive: true });
  const tarPath = join(layoutDir, 'layer.tar');
  await create({ cwd: root, file: tarPath, portable: true, mtime: new Date('2026-01-01T00:00:00Z') }, ['.']);
  const tarBytes = await readFile(tarPath);
  await rm(tarPath);
  const gz = gzipSync(tarBytes);
  const config = Buffer.from(
    JSON.stringify({
      architecture: process.arch === 'x64' ? 'amd64' : process.arch,
      os: 'linux',
      created: '2026-01-01T00:00:00Z',
      config: { Env: ['PATH=/bin:/usr/bin'], Cmd: ['/bin/sh'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [sha256(tarBytes)] },
      history: [{ created: '2026-01-01T00:00:00Z', created_by: 'ferry demo: files from this host' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(gz), size: gz.length }],
    }),
  );
  const blobs = join(layoutDir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  for (const b of [gz, config, manifest]) await writeFile(join(blobs, sha256(b).slice(7)), b);
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layoutDir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(manifest),
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': refName },
        },
      ],
    }),
  );
  return sha256(manifest);
}

/** Run ferry, echoing the command; resolves to its exit code. Async: the registry is served from this process. */
function ferry(args, env) {
  console.log(`$ ferry ${args.join(' ')}`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [ferryBin, ...args], { stdio: 'inherit', env: { ...process.env, ...env } });
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise(code ?? (signal ? 128 : 1)));
  });
}

async function main() {
  const work = await mkdtemp(join(tmpdir(), 'ferry-demo-'));
  const env = { FERRY_ROOT: join(work, 'store'), FERRY_CACHE_DIR: join(work, 'cache') };
  let server;
  try {
    step('build an image from files on this host');
    const rootfs = join(work, 'rootfs');
    console.log(`userland: ${await buildRootfs(rootfs)}`);
    const layout = join(work, 'layout');
    const digest = await writeLayout(rootfs, layout, 'demo/hello:1');
    console.log(`OCI layout ${layout}, manifest ${digest}`);

    step("serve it with ferry's own registry server (ferry serve) on loopback");
    console.log(`$ ferry serve -q --listen 127.0.0.1:0 oci:${layout}`);
    server = spawn(process.execPath, [ferryBin, 'serve', '-q', '--listen', '127.0.0.1:0', `oci:${layout}`], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...env },
    });
    const host = await firstLine(server);
    const ref = `${host}/demo/hello:1`;
    console.log(`serving ${ref}`);

    step('inspect the image in the registry');
    await must(['inspect', ref], env);

    const bundle = join(work, 'hello.tar.zst');
    step('export it to a bundle');
    await must(['export', '-o', bundle, ref], env);
    await must(['ls', bundle], env);
    await must(['verify', bundle], env);

    step('import the bundle into a fresh store (the air-gapped side)');
    await must(['import', bundle], env);
    await must(['images'], env);

    step('run a container from the store');
    // Shell builtins only, so the same command works with busybox or with the host's bare sh.
    const script = 'while read -r l; do echo "$l"; done < /etc/motd; read -r h < /proc/sys/kernel/hostname; echo "shell pid $$ in its own PID namespace, hostname $h"';
    await must(['run', '--rm', ref, '/bin/sh', '-c', script], env);
    step('copy-on-write: change a container, see the diff, commit it as a new image');
    await must(['run', '--name', 'demo-c1', ref, '/bin/sh', '-c', 'echo "changed inside a container" > /etc/motd'], env);
    await must(['diff', 'demo-c1'], env);
    await must(['commit', '-m', 'demo change', 'demo-c1', 'demo/hello:2'], env);
    await must(['rm', 'demo-c1'], env);
    const show = 'while read -r l; do echo "$l"; done < /etc/motd';
    await must(['run', '--rm', 'demo/hello:2', '/bin/sh', '-c', show], env);
    await must(['run', '--rm', ref, '/bin/sh', '-c', show], env);
    await must(['images'], env);

    step('another host of the isolated network pulls the image from the registry (ferry pull)');
    const env2 = { FERRY_ROOT: join(work, 'store2'), FERRY_CACHE_DIR: join(work, 'cache2') };
    await must(['pull', ref], env2);
    await must(['images'], env2);

    step('customise it with a Dockerfile, offline (ferry build)');
    const context = join(work, 'context');
    await mkdir(context);
    await writeFile(join(context, 'greeting.txt'), 'customised with a Dockerfile\n');
    await writeFile(
      join(context, 'Dockerfile'),
      [
        `FROM ${ref}`,
        'COPY greeting.txt /etc/motd',
        'RUN echo "and a RUN step in ferry\'s runtime" >> /etc/motd',
        'CMD ["/bin/sh", "-c", "while read -r l; do echo \\"$l\\"; done < /etc/motd"]',
        '',
      ].join('\n'),
    );
    await must(['build', '-t', 'demo/custom:1', context], env2);
    await must(['run', '--rm', 'demo/custom:1'], env2);

    step('a service: --restart on-failure:2 runs it again with docker\'s back-off, three runs in all, then it stays exited');
    await must(['run', '-d', '--name', 'demo-svc', '--restart', 'on-failure:2', ref, '/bin/sh', '-c', 'echo "service run"; exit 1'], env);
    await waitForExit('demo-svc', env);
    await must(['logs', 'demo-svc'], env);
    await must(['ps', '-a'], env);
    await must(['rm', 'demo-svc'], env);
    await must(['fsck'], env);
    step('done: export -> import -> run -> commit -> pull -> build -> services worked end to end');
  } finally {
    if (server) server.kill('SIGTERM');
    await rm(work, { recursive: true, force: true });
  }
}

/** The first line a child prints (ferry serve -q prints its address once it listens). */
function firstLine(child) {
  return new Promise((resolvePromise, reject) => {
    let text = '';
    child.stdout.on('data', (chunk) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl >= 0) resolvePromise(text.slice(0, nl).trim());
    });
    child.once('exit', (code) => reject(new Error(`ferry serve exited with ${code} before listening`)));
  });
}

/** Wait until a restarting container has used up its policy (ferry ps --json says exited, not restarting). */
async function waitForExit(name, env) {
  for (let i = 0; i < 100; i++) {
    const out = await new Promise((resolvePromise, reject) => {
      const child = spawn(process.execPath, [ferryBin, 'inspect', name], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
      let text = '';
      child.stdout.on('data', (c) => (text += c));
      child.on('error', reject);
      child.on('close', () => resolvePromise(text));
    });
    const state = JSON.parse(out)[0]?.State;
    if (state !== undefined && state.Status === 'exited' && state.RestartCount === 2) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`demo failed: ${name} did not finish its restarts`);
}

/** Run a ferry step; the demo fails loudly at the first step that fails. */
async function must(args, env) {
  const code = await ferry(args, env);
  if (code !== 0) throw new Error(`demo failed: ferry ${args[0]} exited with ${code} (its message is above)`);
}

try {
  await main();
} catch (err) {
  console.error(`\n${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
