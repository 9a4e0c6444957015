import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The library as a program sees it: everything below comes from src/index.ts alone.
import {
  fsck,
  importArchive,
  importBundle,
  listDockerArchive,
  openSource,
  openStore,
  openStoreName,
  parseReference,
  pullImages,
  pushImages,
  RegistryClient,
  storeLayerCache,
  writeBundle,
  writeDockerArchive,
} from '../src/index.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestLayout, pushTestImages, type TestLayout } from './helpers/test-images.js';
import { makeTempDir, removeDir } from './helpers/tmp.js';

/**
 * What the CLI does, done by a program through src/index.ts: import (an OCI layout and a
 * bundle), pull, push and save, each ending in a store, registry or archive with the source's
 * digests.
 */
let work: string;
let layout: TestLayout;
let registry: RunningRegistry;
let client: RegistryClient;

beforeAll(async () => {
  work = await makeTempDir('library');
  layout = await buildTestLayout(join(work, 'layout'));
  registry = await startRegistry();
  await pushTestImages(layout, registry);
  client = new RegistryClient({ insecureRegistries: [registry.host] });
}, 60_000);

afterAll(async () => {
  client?.close();
  await registry?.stop();
  await removeDir(work);
});

describe('the library API (src/index.ts)', () => {
  it('imports an OCI layout and a bundle, pulls, pushes and saves, keeping digests', async () => {
    // import: an OCI layout
    const store = await openStore({ root: join(work, 'store') });
    const [imported] = await importArchive(store, `oci:${layout.dir}:app`);
    expect(imported!.images.map((i) => i.digest)).toEqual([layout.refs.app]);
    expect(imported!.layersWritten).toBe(layout.images.app!.layers.length);

    // import: a bundle written from the same layout
    const source = await openSource(`oci:${layout.dir}:tools`, { platforms: 'all', client: () => client });
    const bundle = join(work, 'tools.tar.zst');
    try {
      await writeBundle(source.images.map((s) => ({ ref: s.ref, image: s.image })), bundle, { level: 1 });
    } finally {
      await source.close();
    }
    const fromBundle = await importBundle(store, bundle);
    expect(fromBundle.images.map((i) => i.manifestDigest)).toEqual([layout.refs.tools]);

    // pull: registry straight into another store
    const pulledStore = await openStore({ root: join(work, 'pulled') });
    const { results } = await pullImages(pulledStore, [`${registry.host}/test/multi:latest`], {
      client,
      platforms: 'all',
      cacheDir: join(work, 'cache'),
    });
    expect(results[0]!.images).toHaveLength(2);
    expect((await fsck(pulledStore, { deep: true })).problems).toEqual([]);

    // push: the store's image to another repository, its manifest digest kept
    const name = await openStoreName(store, 'app');
    const [pushed] = await pushImages(client, [{ target: parseReference(`${registry.host}/lib/app:1`), images: name.images, sourceDigests: name.sourceDigests }], {
      cache: storeLayerCache(store),
    });
    expect(pushed!.digest).toBe(layout.refs.app);

    // save: a docker-archive with the image's config and layers
    const archive = join(work, 'app.tar');
    await writeDockerArchive([{ image: name.images[0]!, tags: [name.ref] }], archive);
    const listed = await listDockerArchive(archive);
    try {
      expect(listed.entries.map((e) => e.image.configDigest)).toEqual([layout.images.app!.configDigest]);
      expect(listed.entries[0]!.image.layers.map((l) => l.diffId)).toEqual(name.images[0]!.layers.map((l) => l.diffId));
    } finally {
      await listed.close();
    }
    expect((await fsck(store, { deep: true })).problems).toEqual([]);
  }, 120_000);
});
