import { execFile } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { Header } from 'tar';

const run = promisify(execFile);

/**
 * Test images built in code from busybox-static, written as an OCI image layout. Everything is
 * fixed (mtimes, owners, entry order, gzip header), so digests are the same on every run with the
 * same busybox binary. See APP_EXPECTATIONS for what the `app` image looks like once unpacked.
 */
export interface TestLayout { dir: string; refs: Record<string, string>; images: Record<string, TestImage> } // ref name in index.json -> manifest digest

export interface TestLayer {
  digest: string;     // of the gzip blob
  diffId: string;     // of the uncompressed tar
  size: number;       // of the gzip blob
  mediaType: string;
}

/** One image manifest of the layout; `multi`'s platform images are `multi@linux/amd64`, `multi@linux/arm64`. */
export interface TestImage {
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
  layers: TestLayer[];
  platform: string;   // os/arch[/variant]
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

/** Every entry's mtime, and the images' `created`. */
export const TEST_IMAGE_EPOCH = new Date('2024-01-01T00:00:00Z');
const CREATED = TEST_IMAGE_EPOCH.toISOString().replace('.000Z', 'Z');

export const BUSYBOX_APPLETS = [
  '[', 'ash', 'awk', 'basename', 'cat', 'chmod', 'chown', 'cp', 'cut', 'date', 'df', 'dirname', 'du',
  'echo', 'env', 'false', 'find', 'grep', 'gzip', 'head', 'hostname', 'id', 'kill', 'ln', 'ls',
  'mkdir', 'mktemp', 'mount', 'mv', 'pidof', 'printf', 'ps', 'pwd', 'readlink', 'realpath', 'rm',
  'rmdir', 'sed', 'seq', 'sh', 'sha256sum', 'sleep', 'sort', 'stat', 'tail', 'tar', 'tee', 'test',
  'timeout', 'touch', 'tr', 'true', 'umount', 'uname', 'uniq', 'wc', 'which', 'whoami', 'xargs', 'yes',
];

export const APP_CONFIG = {
  Entrypoint: ['/opt/app/run.sh'],
  Cmd: ['hello'],
  Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'APP_MODE=test'],
  WorkingDir: '/opt/app',
  User: 'app',
} as const;

/** What `app` looks like unpacked (paths relative to the rootfs), for store/runtime tests. */
export const APP_EXPECTATIONS = {
  present: [
    'bin/busybox', 'bin/sh', 'etc/passwd', 'etc/app/app.conf', 'etc/app/keep.conf', 'data/old/new.txt',
    'opt/app/run.sh', 'opt/app/a-original.txt', 'opt/app/b-hardlink.txt', 'opt/app/current', 'opt/app/suid-tool',
  ],
  /** Deleted by the whiteout `etc/app/.wh.removed.conf` and by the opaque marker of data/old/. */
  absent: ['etc/app/removed.conf', 'data/old/a.txt', 'data/old/b.txt', 'etc/app/.wh.removed.conf', 'data/old/.wh..wh..opq'],
  /** etc/app/app.conf is replaced by the second layer. */
  appConf: 'mode=app\n',
  symlink: { path: 'opt/app/current', target: 'a-original.txt' },
  hardlink: { path: 'opt/app/b-hardlink.txt', target: 'opt/app/a-original.txt' },
  setuid: { path: 'opt/app/suid-tool', mode: 0o4755 },
  /** `run.sh hello` prints this line first. */
  output: 'app says: hello',
} as const;

// ---------------------------------------------------------------------------------------------
// A tiny deterministic tar writer: entries in the given order, fixed owner and mtime.

type Content = Buffer | { size: number; stream: () => Readable };

interface TarEntry {
  path: string;                 // relative, no leading slash; directories without a trailing slash
  type: 'file' | 'dir' | 'symlink' | 'hardlink';
  mode: number;
  uid?: number;
  gid?: number;
  content?: Content;
  linkpath?: string;
}

const directory = (path: string, mode = 0o755, uid = 0, gid = 0): TarEntry => ({ path, type: 'dir', mode, uid, gid });
const file = (path: string, content: string | Content, mode = 0o644): TarEntry => ({
  path,
  type: 'file',
  mode,
  content: typeof content === 'string' ? Buffer.from(content) : content,
});
const symlink = (path: string, linkpath: string): TarEntry => ({ path, type: 'symlink', mode: 0o777, linkpath });
const hardlink = (path: string, linkpath: string): TarEntry => ({ path, type: 'hardlink', mode: 0o644, linkpath });

function headerBlock(entry: TarEntry, size: number): Buffer {
  const typeName = { file: 'File', dir: 'Directory', symlink: 'SymbolicLink', hardlink: 'Link' } as const;
  const header = new Header({
    path: entry.type === 'dir' ? `${entry.path}/` : entry.path,
    mode: entry.mode,
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    size,
    mtime: TEST_IMAGE_EPOCH,
    type: typeName[entry.type],
    linkpath: entry.linkpath ?? '',
    uname: '',
    gname: '',
  });
  const block = Buffer.alloc(512);
  header.encode(block, 0);
  if (header.needPax) throw new Error(`test tar: ${entry.path} needs a pax header; keep test paths short`);
  return block;
}

async function* tarStream(entries: TarEntry[]): AsyncGenerator<Buffer> {
  const written = new Set<string>();
  for (const entry of entries) {
    if (entry.type === 'hardlink' && !written.has(entry.linkpath ?? '')) {
      throw new Error(`test tar: hardlink ${entry.path} comes before its target ${String(entry.linkpath)}`);
    }
    const content = entry.content;
    const size = content === undefined ? 0 : Buffer.isBuffer(content) ? content.length : content.size;
    yield headerBlock(entry, size);
    if (content !== undefined) {
      if (Buffer.isBuffer(content)) {
        yield content;
      } else {
        let seen = 0;
        for await (const chunk of content.stream()) {
          seen += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        if (seen !== size) throw new Error(`test tar: ${entry.path}: stream gave ${seen} bytes, expected ${size}`);
      }
      const pad = (512 - (size % 512)) % 512;
      if (pad > 0) yield Buffer.alloc(pad);
    }
    written.add(entry.path);
  }
  yield Buffer.alloc(1024);
}

/** Pseudo-random bytes from AES-CTR over zeros with a fixed key: fast, seeded, constant memory. */
function pseudoRandom(size: number, seed: string): Readable {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const chunkSize = 1 << 20;
  const zeros = Buffer.alloc(chunkSize);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(chunkSize, left);
      left -= n;
      this.push(cipher.update(n === chunkSize ? zeros : zeros.subarray(0, n)));
    },
  });
}

class Hasher extends Transform {
  private readonly hash = createHash('sha256');
  size = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    callback(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

// ---------------------------------------------------------------------------------------------
// The layout writer.

class LayoutWriter {
  constructor(readonly dir: string) {}

  private blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  }

  async json(value: unknown): Promise<{ digest: string; size: number }> {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await writeFile(this.blobPath(digest), bytes);
    return { digest, size: bytes.length };
  }

  async layer(entries: TarEntry[], level = 6): Promise<TestLayer> {
    const tmp = join(this.dir, 'blobs', `.layer-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    const diff = new Hasher();
    const blob = new Hasher();
    // gzip's header carries mtime 0 and the OS byte from node's bundled zlib: stable bytes.
    await pipeline(Readable.from(tarStream(entries)), diff, createGzip({ level }), blob, createWriteStream(tmp));
    const digest = blob.digest();
    await rename(tmp, this.blobPath(digest));
    return { digest, diffId: diff.digest(), size: blob.size, mediaType: OCI_LAYER_GZIP };
  }

  async image(
    layers: TestLayer[],
    config: Record<string, unknown>,
    history: Array<Record<string, unknown>>,
    platform: { architecture: string; os: string; variant?: string },
  ): Promise<TestImage> {
    const configBlob = await this.json({
      created: CREATED,
      architecture: platform.architecture,
      ...(platform.variant === undefined ? {} : { variant: platform.variant }),
      os: platform.os,
      config,
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: history.map((h) => ({ created: CREATED, ...h })),
    });
    const manifest = await this.json({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configBlob.digest, size: configBlob.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    });
    return {
      manifestDigest: manifest.digest,
      manifestSize: manifest.size,
      configDigest: configBlob.digest,
      layers,
      platform: [platform.os, platform.architecture, ...(platform.variant === undefined ? [] : [platform.variant])].join('/'),
    };
  }
}

function hostArchitecture(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'arm64':
      return 'arm64';
    default:
      return process.arch;
  }
}

// ---------------------------------------------------------------------------------------------
// The images.

async function baseEntries(): Promise<TarEntry[]> {
  const busybox = await readFile('/bin/busybox');
  const entries: TarEntry[] = [
    directory('bin'),
    file('bin/busybox', busybox, 0o755),
    ...BUSYBOX_APPLETS.map((applet) => symlink(`bin/${applet}`, 'busybox')),
    directory('data'),
    directory('data/old'),
    file('data/old/a.txt', 'old a\n'),
    file('data/old/b.txt', 'old b\n'),
    directory('etc'),
    directory('etc/app'),
    file('etc/app/app.conf', 'mode=base\n'),
    file('etc/app/keep.conf', 'keep=yes\n'),
    file('etc/app/removed.conf', 'this file is deleted by a whiteout in app\n'),
    file('etc/group', 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n'),
    file('etc/hostname', 'ferry-test\n'),
    file(
      'etc/passwd',
      'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    ),
    directory('home'),
    directory('home/app', 0o755, 1000, 1000),
    directory('root', 0o700),
    directory('tmp', 0o1777),
  ];
  return sortEntries(entries);
}

function appEntries(): TarEntry[] {
  return sortEntries([
    directory('data'),
    directory('data/old'),
    file('data/old/.wh..wh..opq', ''),
    file('data/old/new.txt', 'new in app\n'),
    directory('etc'),
    directory('etc/app'),
    file('etc/app/.wh.removed.conf', ''),
    file('etc/app/app.conf', APP_EXPECTATIONS.appConf),
    directory('opt'),
    directory('opt/app'),
    file('opt/app/a-original.txt', 'original\n'),
    hardlink('opt/app/b-hardlink.txt', 'opt/app/a-original.txt'),
    symlink('opt/app/current', 'a-original.txt'),
    file('opt/app/run.sh', '#!/bin/sh\necho "app says: $*"\necho "cwd=$(pwd) uid=$(id -u) mode=$APP_MODE"\n', 0o755),
    file('opt/app/suid-tool', '#!/bin/sh\nid\n', 0o4755),
  ]);
}

function toolsEntries(): TarEntry[] {
  return sortEntries([
    directory('etc'),
    file('etc/tools.conf', 'tools=1\n'),
    directory('opt'),
    directory('opt/tools'),
    file('opt/tools/tool.sh', '#!/bin/sh\necho "tool: $*"\n', 0o755),
  ]);
}

/** Sorted by path, so a hardlink must be named to sort after its target (the writer checks). */
function sortEntries(entries: TarEntry[]): TarEntry[] {
  return [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

const BASE_CONFIG = { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/sh'] };
const BASE_HISTORY = { created_by: 'ferry test: busybox userland, /etc files' };

export async function buildTestLayout(dir: string, options: { bigLayerBytes?: number } = {}): Promise<TestLayout> {
  const layout = new LayoutWriter(dir);
  await layout.init();
  const arch = hostArchitecture();
  const host = { os: 'linux', architecture: arch };
  const baseLayer = await layout.layer(await baseEntries());
  const images: Record<string, TestImage> = {};
  const index: Array<Record<string, unknown>> = [];
  const addRef = (name: string, mediaType: string, digest: string, size: number): void => {
    index.push({ mediaType, digest, size, annotations: { [REF_NAME_ANNOTATION]: name } });
  };

  images.base = await layout.image([baseLayer], BASE_CONFIG, [BASE_HISTORY], host);

  const appLayer = await layout.layer(appEntries());
  images.app = await layout.image(
    [baseLayer, appLayer],
    { ...APP_CONFIG, Labels: { 'org.ferry.test': 'app' }, StopSignal: 'SIGTERM' },
    [
      BASE_HISTORY,
      { created_by: 'ENV APP_MODE=test', empty_layer: true },
      { created_by: 'ferry test: app files, whiteout, opaque dir, links, setuid' },
    ],
    host,
  );

  const toolsLayer = await layout.layer(toolsEntries());
  images.tools = await layout.image(
    [baseLayer, toolsLayer],
    { ...BASE_CONFIG, Cmd: ['/opt/tools/tool.sh', 'ready'] },
    [BASE_HISTORY, { created_by: 'ferry test: tools' }],
    host,
  );

  const amd64 = await layout.image([baseLayer], BASE_CONFIG, [BASE_HISTORY], { os: 'linux', architecture: 'amd64' });
  const armLayer = await layout.layer(sortEntries([directory('etc'), file('etc/arch', 'arm64\n')]));
  const arm64 = await layout.image(
    [baseLayer, armLayer],
    BASE_CONFIG,
    [BASE_HISTORY, { created_by: 'ferry test: arm64 marker' }],
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  );
  images['multi@linux/amd64'] = amd64;
  images['multi@linux/arm64'] = arm64;
  const multiIndex = await layout.json({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: amd64.manifestDigest, size: amd64.manifestSize, platform: { architecture: 'amd64', os: 'linux' } },
      { mediaType: OCI_MANIFEST, digest: arm64.manifestDigest, size: arm64.manifestSize, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    ],
  });

  for (const name of ['base', 'app', 'tools'] as const) {
    const image = images[name]!;
    addRef(name, OCI_MANIFEST, image.manifestDigest, image.manifestSize);
  }
  addRef('multi', OCI_INDEX, multiIndex.digest, multiIndex.size);

  if (options.bigLayerBytes !== undefined) {
    const bytes = options.bigLayerBytes;
    // Random bytes do not compress: level 0 (stored deflate blocks) is still valid gzip, and fast.
    const bigLayer = await layout.layer(
      [directory('data'), file('data/big.bin', { size: bytes, stream: () => pseudoRandom(bytes, 'ferry-big-layer') })],
      0,
    );
    images.big = await layout.image(
      [baseLayer, bigLayer],
      BASE_CONFIG,
      [BASE_HISTORY, { created_by: `ferry test: ${bytes} pseudo-random bytes` }],
      host,
    );
    addRef('big', OCI_MANIFEST, images.big.manifestDigest, images.big.manifestSize);
  }

  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: index }));
  const refs: Record<string, string> = {};
  for (const entry of index) {
    const annotations = entry.annotations as Record<string, string>;
    refs[annotations[REF_NAME_ANNOTATION]!] = entry.digest as string;
  }
  return { dir, refs, images };
}

/**
 * Push every image of the layout with skopeo (`--all --preserve-digests`, so manifest digests stay
 * what the layout says) to HOST/REPO_PREFIX/NAME:latest. Returns 'HOST/prefix/name:latest' -> digest.
 */
export async function pushTestImages(
  layout: TestLayout,
  registry: { host: string; username?: string | undefined; password?: string | undefined },
  repoPrefix = 'test',
): Promise<Record<string, string>> {
  const pushed: Record<string, string> = {};
  for (const [name, digest] of Object.entries(layout.refs)) {
    const ref = `${registry.host}/${repoPrefix}/${name}:latest`;
    const args = ['copy', '--all', '--preserve-digests', '--quiet', '--dest-tls-verify=false'];
    if (registry.username !== undefined) args.push('--dest-creds', `${registry.username}:${registry.password ?? ''}`);
    args.push(`oci:${layout.dir}:${name}`, `docker://${ref}`);
    try {
      await run('skopeo', args, { maxBuffer: 16 << 20 });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? '';
      throw new Error(`skopeo copy ${name} -> ${ref} failed: ${stderr.trim()}`, { cause: err });
    }
    pushed[ref] = digest;
  }
  return pushed;
}

/**
 * A layout of `count` images for the scale bench: every image is the busybox base layer plus one
 * layer of its own holding `uniqueBytes` pseudo-random bytes, named `img-00001`... in index.json.
 * Layers are written `concurrency` at a time; 1600 images take a few seconds.
 */
export async function buildScaleLayout(dir: string, count: number, uniqueBytes = 64 * 1024, concurrency = 8): Promise<string[]> {
  const layout = new LayoutWriter(dir);
  await layout.init();
  const host = { os: 'linux', architecture: hostArchitecture() };
  const baseLayer = await layout.layer(await baseEntries());
  const names = Array.from({ length: count }, (_, i) => `img-${String(i + 1).padStart(5, '0')}`);
  const index: Array<Record<string, unknown>> = new Array<Record<string, unknown>>(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const name = names[i]!;
      // Random bytes do not compress: level 0 keeps building fast.
      const layer = await layout.layer(
        [directory('data'), file(`data/${name}.bin`, { size: uniqueBytes, stream: () => pseudoRandom(uniqueBytes, name) })],
        0,
      );
      const image = await layout.image([baseLayer, layer], BASE_CONFIG, [BASE_HISTORY, { created_by: `ferry scale bench: ${name}` }], host);
      index[i] = { mediaType: OCI_MANIFEST, digest: image.manifestDigest, size: image.manifestSize, annotations: { [REF_NAME_ANNOTATION]: name } };
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: index }));
  return names;
}
