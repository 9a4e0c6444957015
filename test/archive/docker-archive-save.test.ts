import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDockerArchive, openOciLayout } from '../../src/archive/index.js';
import { writeDockerArchive, type SaveImage } from '../../src/verbs/save.js';
import { FerryError, isFerryError } from '../../src/errors.js';
import { parseReference } from '../../src/oci/reference.js';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const run = promisify(execFile);
let work: string;
let layout: TestLayout;
let images: SaveImage[];

beforeAll(async () => {
  work = await makeTempDir('archive-writer');
  layout = await buildTestLayout(join(work, 'layout'));
  images = [];
  for (const name of ['app', 'tools']) {
    const image = (await openOciLayout(layout.dir, name, 'all')).images[0]!;
    images.push({ image, tags: [parseReference(`registry.example:5000/team/${name}:1`), parseReference(`${name}:latest`)] });
  }
});
afterAll(async () => {
  await removeDir(work);
});

describe('writeDockerArchive', () => {
  it('writes the docker 25+ form that ferry and skopeo read back: same configs and layers, full-name tags', async () => {
    const file = join(work, 'out.tar');
    await writeDockerArchive(images, file);
    const { stdout } = await run('tar', ['tf', file]);
    const names = stdout.trim().split('\n');
    // The shared base layer is written once.
    expect(names.filter((n) => n.startsWith('blobs/sha256/') && n.length > 20)).toHaveLength(3 + 2 + 2);
    expect(names.slice(-3)).toEqual(['index.json', 'manifest.json', 'repositories']);
    const manifestJson = JSON.parse((await run('tar', ['xOf', file, 'manifest.json'])).stdout) as Array<{ RepoTags: string[] }>;
    expect(manifestJson[0]!.RepoTags).toEqual(['registry.example:5000/team/app:1', 'docker.io/library/app:latest']);

    const back = await openDockerArchive(file, 'registry.example:5000/team/app:1');
    const image = back.images[0]!;
    expect(image.configDigest).toBe(images[0]!.image.configDigest);
    expect(image.layers.map((l) => l.diffId)).toEqual(images[0]!.image.layers.map((l) => l.diffId));
    await back.close();

    const inspected = JSON.parse((await run('skopeo', ['inspect', `docker-archive:${file}:docker.io/library/tools:latest`])).stdout) as { Digest: string; Layers: string[] };
    expect(inspected.Layers).toEqual(images[1]!.image.layers.map((l) => l.diffId));
  });

  it('gives the same bytes to a stream (sizes measured first) as to a file (headers patched in place)', async () => {
    const file = join(work, 'a.tar');
    const streamed = join(work, 'b.tar');
    await writeDockerArchive(images, file);
    const out = createWriteStream(streamed);
    await writeDockerArchive(images, out);
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    expect((await readFile(streamed)).equals(await readFile(file))).toBe(true);
  });

  it('leaves no file behind when a layer fails its digest', async () => {
    const broken = images[0]!.image;
    const failing = async function* (): AsyncGenerator<Buffer> {
      yield Buffer.alloc(1024);
      throw new FerryError('DIGEST_MISMATCH', `layer ${broken.layers[1]!.diffId}: its content hashes to something else`);
    };
    const bad: SaveImage = {
      tags: [],
      image: { ...broken, layers: broken.layers.map((l, i) => (i === 1 ? { ...l, tar: async () => Readable.from(failing()) } : l)) },
    };
    const target = join(work, 'broken', 'x.tar');
    await run('mkdir', ['-p', join(work, 'broken')]);
    const err = await writeDockerArchive([bad], target).catch((e: unknown) => e);
    expect(isFerryError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(await readdir(join(work, 'broken'))).toEqual([]);
  });
});
