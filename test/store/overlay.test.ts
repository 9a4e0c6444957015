import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { openStore, overlayMountOptions, rootfsPlan, type Store } from '../../src/store/index.js';
import { importImage } from '../../src/verbs/import-image.js';
import { memoryImage, type MemoryImage } from '../helpers/memory-image.js';
import { buildTar } from '../helpers/tar-builder.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/**
 * The proof of the overlay form: two layers unpacked by the store and mounted with overlayfs
 * show the same tree as umoci's unpack of the same OCI image (whiteouts, opaque dirs, implied
 * parents, owners, modes, setuid, links, times).
 */
const run = promisify(execFile);
let base: string;
let store: Store;
let image: MemoryImage;
let merged: string;
let mounted = false;

const T = 1_700_000_000;
const layer1 = buildTar([
  { name: 'bin/', type: 'dir', mtime: T },
  { name: 'bin/tool', body: '#!/bin/sh\necho tool\n', mode: 0o4755, uid: 1000, gid: 1000, mtime: T },
  { name: 'bin/alias', type: 'hardlink', linkname: 'bin/tool' },
  { name: 'bin/sh', type: 'symlink', linkname: '/bin/tool', mtime: T },
  { name: 'etc/', type: 'dir', mtime: T },
  { name: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n', mtime: T },
  { name: 'etc/removed', body: 'gone in layer 2', mtime: T },
  { name: 'etc/conf.d/', type: 'dir', mtime: T },
  { name: 'etc/conf.d/a.conf', body: 'a', mtime: T },
  { name: 'etc/conf.d/b.conf', body: 'b', mtime: T },
  { name: 'tmp/', type: 'dir', mode: 0o1777, mtime: T },
  { name: 'tmp/cache', body: 'cached', mtime: T },
  { name: 'var/', type: 'dir', mtime: T },
  { name: 'var/lib/', type: 'dir', mode: 0o750, uid: 5, gid: 6, mtime: T },
  { name: 'var/lib/db', body: 'db', mode: 0o600, uid: 5, gid: 6, mtime: T },
  { name: 'usr/', type: 'dir', mtime: T },
  { name: 'usr/share/', type: 'dir', mtime: T },
  { name: 'usr/share/doc', body: 'will become a dir', mtime: T },
]);
const layer2 = buildTar([
  { name: 'etc/', type: 'dir', mtime: T + 10 },
  { name: 'etc/.wh.removed', body: '' },
  { name: 'etc/conf.d/', type: 'dir', mode: 0o700, mtime: T + 10 },
  { name: 'etc/conf.d/.wh..wh..opq', body: '' },
  { name: 'etc/conf.d/c.conf', body: 'c', mtime: T + 10 },
  { name: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n', mtime: T + 10 },
  // Only a whiteout under tmp/ and var/lib/: their modes and owners must survive.
  { name: 'tmp/.wh.cache', body: '' },
  { name: 'var/lib/.wh.db', body: '' },
  { name: 'usr/share/doc/', type: 'dir', mtime: T + 10 },
  { name: 'usr/share/doc/README', body: 'now a dir', mtime: T + 10 },
  { name: 'bin/newfile', body: 'new', mode: 0o2750, gid: 50, mtime: T + 10 },
]);

interface Node {
  type: string;
  mode: number;
  owner: string;
  detail: string;
  mtime?: number;
}

async function tree(root: string): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const walk = async (rel: string): Promise<void> => {
    const path = join(root, rel);
    const st = await lstat(path);
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isCharacterDevice() ? 'char' : 'other';
    let detail = '';
    if (type === 'file') detail = createHash('sha256').update(await readFile(path)).digest('hex').slice(0, 16);
    if (type === 'symlink') detail = await readlink(path);
    const node: Node = { type, mode: st.mode & 0o7777, owner: `${st.uid}:${st.gid}`, detail };
    if (type !== 'dir') node.mtime = Math.floor(st.mtimeMs / 1000);
    if (rel !== '') out.set(rel, node);
    if (type === 'dir') for (const name of await readdir(path)) await walk(rel === '' ? name : `${rel}/${name}`);
  };
  await walk('');
  return out;
}

async function writeLayout(dir: string, img: MemoryImage): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const [digest, bytes] of img.blobs) await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest as never)), bytes);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: MediaType.ociManifest, digest: img.digest, size: img.rawManifest.length, annotations: { 'org.opencontainers.image.ref.name': 'test' } }],
    }),
  );
}

beforeAll(async () => {
  base = await makeTempDir('overlay');
  store = await openStore({ root: join(base, 'store') });
  image = memoryImage([layer1, layer2], { ref: 'overlay-test:1' });
  await importImage(store, image);
  const plan = rootfsPlan({ storeRoot: store.root, diffIds: image.config.rootfs.diff_ids, containerId: 'test' });
  merged = join(base, 'merged');
  await mkdir(merged);
  // Read-only overlay of the two lowerdirs (no upper), relative l/ paths from the store root.
  const lowerOnly = overlayMountOptions(plan).split(',upperdir=')[0]!;
  await run('mount', ['-t', 'overlay', 'overlay', '-o', lowerOnly, merged], { cwd: store.root });
  mounted = true;
});

afterAll(async () => {
  if (mounted) await run('umount', [merged]);
  await removeDir(base);
});

describe('overlay mount of unpacked layers', () => {
  it('shows whiteouts, opaque dirs, implied parents and replacements as the image means them', async () => {
    const t = await tree(merged);
    expect(t.has('etc/removed')).toBe(false);
    expect([...t.keys()].filter((k) => k.startsWith('etc/conf.d/')).sort()).toEqual(['etc/conf.d/c.conf']);
    expect(t.get('etc/conf.d')?.mode).toBe(0o700);
    expect(t.get('tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(t.has('tmp/cache')).toBe(false);
    expect(t.get('var/lib')).toMatchObject({ mode: 0o750, owner: '5:6' });
    expect(t.get('usr/share/doc')?.type).toBe('dir');
    expect(t.get('bin/tool')).toMatchObject({ mode: 0o4755, owner: '1000:1000' });
    expect(t.get('bin/newfile')).toMatchObject({ mode: 0o2750, owner: '0:50' });
    expect(t.get('bin/sh')).toMatchObject({ type: 'symlink', detail: '/bin/tool' });
    expect(await readFile(join(merged, 'etc/passwd'), 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
  });

  it('equals umoci unpack of the same OCI image', async () => {
    const layout = join(base, 'layout');
    await writeLayout(layout, image);
    const bundle = join(base, 'bundle');
    await run('umoci', ['unpack', '--image', `${layout}:test`, bundle]);
    const ours = await tree(merged);
    const theirs = await tree(join(bundle, 'rootfs'));
    expect(theirs.size).toBeGreaterThan(15);
    expect(Object.fromEntries([...ours].sort())).toEqual(Object.fromEntries([...theirs].sort()));
  });
});
