import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestLayout, type TestLayout } from '../helpers/test-images.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { ferryOk, imageId, writeContext } from './build-helpers.js';

/** SOURCE_DATE_EPOCH: the same Dockerfile and context give the same image digest, in any store, at any time. */
let work: string;
let layout: TestLayout;

beforeAll(async () => {
  work = await makeTempDir('build-repro');
  layout = await buildTestLayout(join(work, 'layout'));
}, 60_000);

afterAll(async () => {
  await removeDir(work);
});

const DOCKERFILE = `FROM base
ENV GREETING=hello
COPY . /app/
WORKDIR /srv/new
RUN echo "$GREETING" > /app/out.txt && mkdir -p /var/made && rm /etc/app/keep.conf
LABEL built=yes
CMD ["cat", "/app/out.txt"]
`;

describe('reproducible builds', () => {
  it('two builds with the same SOURCE_DATE_EPOCH in two stores give the same image digest', async () => {
    const context = join(work, 'ctx');
    await writeContext(context, { Dockerfile: DOCKERFILE, 'one.txt': '1\n', 'dir/two.txt': '2\n' });
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const ids: string[] = [];
    for (const store of ['a', 'b']) {
      const root = join(work, store);
      await ferryOk(root, ['import', `oci:${layout.dir}:base`]);
      ids.push(imageId(await ferryOk(root, ['build', '-t', 'repro/app', context], env)));
      // Later, without the cache: the same bytes again.
      await new Promise((r) => setTimeout(r, 1100));
      ids.push(imageId(await ferryOk(root, ['build', '--no-cache', '-t', 'repro/app', context], env)));
    }
    expect(new Set(ids).size).toBe(1);
    const inspect = JSON.parse(await ferryOk(join(work, 'a'), ['inspect', 'repro/app'])) as { created: string };
    expect(inspect.created).toBe('2023-11-14T22:13:20.000Z');
    // A different epoch is a different image.
    const other = imageId(await ferryOk(join(work, 'a'), ['build', '-t', 'repro/app', context], { SOURCE_DATE_EPOCH: '1700000001' }));
    expect(other).not.toBe(ids[0]);
  }, 120_000);
});
