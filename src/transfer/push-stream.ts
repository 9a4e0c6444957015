import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { FerryError, isFerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { IndexInfo } from '../oci/image.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { layerCompression } from '../oci/media-types.js';
import { formatPlatform, platformMatches, type Platform } from '../oci/platform.js';
import { formatReference, withDigest, type Reference } from '../oci/reference.js';
import type { ProgressListener } from '../io/progress.js';
import { BlobProgress, compress, repoText, type PushResult, type BlobPushResult, type BlobSize, type PushCompression, type PushTarget, type Repository } from './push-target.js';
import { buildIndex, indexIsComplete, rewriteManifest, type BuiltManifest, type IndexChild } from '../oci/rewrite-manifest.js';
import { Spool } from './spool.js';

/**
 * Push images straight from a one-pass stream of blobs (a bundle), with no store: the plan comes
 * first (what every image needs), then manifests and configs, then layers in stream order. Each
 * layer flows into a spool file and from there into the upload while it still arrives (raw layers
 * gzip- or zstd-compressed on the way, the digest known at the end), so the stream moves on while
 * uploads run, a dropped upload is retried from the spool, and other repositories mount the blob.
 * Layers kept as pulled go up byte for byte, so those images keep their manifest digests.
 */
export interface StreamedLayer {
  /** As the original manifest lists it. */
  digest: Digest;
  size: number;
  mediaType: string;
  diffId: Digest;
  /** The blob in the stream that holds it: `digest` when kept as pulled, `diffId` when raw. */
  blob: Digest;
}

export interface StreamedImage {
  ref: string;
  platform: Platform;
  manifestDigest: Digest;
  manifestMediaType: string;
  configDigest: Digest;
  configSize: number;
  layers: readonly StreamedLayer[];
  /** The index the image came from; its bytes are a `manifest` blob of the stream. */
  index?: { digest: Digest; mediaType: string };
}

export interface StreamedBlob {
  digest: Digest;
  size: number;
  kind: 'manifest' | 'config' | 'layer';
  /** `rewritten` manifests serve only the stream's own layout and are not pushed. */
  encoding: string;
  /** Verified while it flows; read it to its end or leave it untouched before the next blob. */
  stream: Readable;
}

export interface PushStreamOptions {
  /** Where each image goes: its source reference -> repository and tag. */
  retarget: (ref: string) => Reference;
  compression?: PushCompression;
  /** Layers uploading at once, each with its spool file (default 4). */
  jobs?: number;
  /** Directory for spool files (default: the system temp directory). */
  spoolDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
}

interface LayerNeed {
  /** Repositories still lacking the blob (as pulled) or the layer (raw). */
  repos: Repository[];
  raw: boolean;
  diffId: Digest;
  what: string;
}

async function readSmall(stream: Readable, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > MAX_MANIFEST_BYTES) throw new FerryError('INVALID_MANIFEST', `${what}: over ${MAX_MANIFEST_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function repoOf(ref: Reference): Repository {
  return { registry: ref.registry, repository: ref.repository };
}

function addRepo(list: Repository[], repo: Repository): void {
  if (!list.some((r) => r.registry === repo.registry && r.repository === repo.repository)) list.push(repo);
}

/**
 * diffId -> compressed blob, from images an earlier push left under the same tags: a manifest
 * there whose config is this image's config names, as its layer i, a compressed form of
 * `diff_ids[i]` (in the chosen compression). A second push of the same raw bundle then sends
 * only what changed, as docker does with its layer digest cache.
 */
async function earlierForms(target: PushTarget, groups: ReadonlyArray<{ target: Reference; images: StreamedImage[] }>, compression: PushCompression, call: { signal: AbortSignal }): Promise<Map<string, BlobSize>> {
  const out = new Map<string, BlobSize>();
  for (const group of groups) {
    const ref = group.target;
    if (ref.tag === undefined || !group.images.some((image) => image.layers.some((l) => l.blob !== l.digest))) continue;
    const what = `manifest of ${formatReference(ref)} (an earlier push)`;
    let top: { digest: Digest; mediaType: string; raw: Buffer };
    try {
      top = await target.getManifest(ref, call);
    } catch (err) {
      if (isFerryError(err, 'NOT_FOUND')) continue; // never pushed: nothing to reuse
      throw err;
    }
    const manifests: Buffer[] = [];
    const parsed = parseManifest(top.raw, top.mediaType, what);
    if (parsed.kind === 'image') manifests.push(top.raw);
    else {
      for (const entry of parsed.manifest.manifests) {
        if (entry.platform === undefined || !group.images.some((image) => platformMatches(image.platform, entry.platform!))) continue;
        manifests.push((await target.getManifest(withDigest(repoOf(ref), entry.digest), call)).raw);
      }
    }
    for (const raw of manifests) {
      const m = parseManifest(raw, undefined, what);
      if (m.kind !== 'image') continue;
      const image = group.images.find((i) => i.configDigest === m.manifest.config.digest && i.layers.length === m.manifest.layers.length);
      if (image === undefined) continue;
      for (const [i, layer] of image.layers.entries()) {
        const d = m.manifest.layers[i]!;
        if (layer.blob !== layer.digest && layerCompression(d.mediaType) === compression) out.set(layer.diffId, { digest: d.digest, size: d.size });
      }
    }
  }
  return out;
}

/**
 * The index the images of one name came from, when they all name the same one and the stream
 * carried it; `complete` when every manifest it lists is among the images (then it can go up as is).
 */
function sourceIndex(images: readonly StreamedImage[], manifests: ReadonlyMap<string, Buffer>, what: string): { index: IndexInfo; complete: boolean } | undefined {
  const ref = images[0]?.index;
  if (ref === undefined || !images.every((i) => i.index?.digest === ref.digest)) return undefined;
  const raw = manifests.get(ref.digest);
  if (raw === undefined) return undefined;
  const index: IndexInfo = { digest: ref.digest, mediaType: ref.mediaType, raw };
  return { index, complete: indexIsComplete(index, images.map((i) => i.manifestDigest), what) };
}

export async function pushStreamedImages(
  target: PushTarget,
  images: readonly StreamedImage[],
  blobs: AsyncIterable<StreamedBlob>,
  options: PushStreamOptions,
): Promise<PushResult[]> {
  const compression = options.compression ?? 'gzip';
  const controller = new AbortController();
  const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal]);
  const call = { signal };
  const spoolDir = options.spoolDir ?? tmpdir();
  const limit = pLimit(options.jobs ?? 4);

  // ---- plan: targets, and which repositories need which blob
  const groups = new Map<string, { target: Reference; images: StreamedImage[] }>();
  for (const image of images) {
    const group = groups.get(image.ref) ?? { target: options.retarget(image.ref), images: [] };
    group.images.push(image);
    groups.set(image.ref, group);
  }
  const needs = new Map<string, LayerNeed>();
  for (const group of groups.values()) {
    const repo = repoOf(group.target);
    for (const image of group.images) {
      for (const [i, layer] of image.layers.entries()) {
        const raw = layer.blob !== layer.digest;
        const need = needs.get(layer.blob) ?? { repos: [], raw, diffId: layer.diffId, what: `${image.ref} (${formatPlatform(image.platform)}) layer ${i} (${layer.digest})` };
        addRepo(need.repos, repo);
        needs.set(layer.blob, need);
      }
    }
  }
  // Blobs kept as pulled that a repository already has are not sent again: ask first.
  const homes = new Map<string, Set<string>>();
  const counts = new Map<string, Record<BlobPushResult, number>>();
  const count = (repo: Repository, result: BlobPushResult): void => {
    const c = counts.get(repoText(repo)) ?? { uploaded: 0, exists: 0, mounted: 0 };
    c[result]++;
    counts.set(repoText(repo), c);
  };
  const home = (digest: Digest, repo: Repository): void => {
    const set = homes.get(digest) ?? new Set<string>();
    set.add(repo.repository);
    homes.set(digest, set);
  };
  await Promise.all(
    [...needs.entries()]
      .filter(([, need]) => !need.raw)
      .flatMap(([digest, need]) =>
        need.repos.map((repo) =>
          limit(async () => {
            if ((await target.headBlob(repo, digest as Digest, { ...call, push: true })) !== undefined) {
              home(digest as Digest, repo);
              count(repo, 'exists');
            }
          }),
        ),
      ),
  );
  for (const [digest, need] of needs) {
    if (!need.raw) need.repos = need.repos.filter((r) => !homes.get(digest)?.has(r.repository));
  }

  // Raw layers a previous push compressed are not compressed and sent again: see earlierForms.
  const earlier = await earlierForms(target, [...groups.values()], compression, call);
  const compressed = new Map<string, BlobSize>();
  for (const need of needs.values()) {
    const known = need.raw ? earlier.get(need.diffId) : undefined;
    if (known === undefined) continue;
    const lacking: Repository[] = [];
    for (const repo of need.repos) {
      if ((await target.headBlob(repo, known.digest, { ...call, push: true })) === undefined) lacking.push(repo);
      else {
        home(known.digest, repo);
        count(repo, 'exists');
      }
    }
    if (lacking.length === need.repos.length) continue; // gone everywhere: compress and send it again
    const still: Repository[] = [];
    for (const repo of lacking) {
      const notMounted = new FerryError('NOT_FOUND', `mount ${known.digest} into ${repoText(repo)}`);
      try {
        count(repo, await target.pushBlob(repo, known, () => Promise.reject(notMounted), { ...call, mountFrom: [...(homes.get(known.digest) ?? [])] }));
        home(known.digest, repo);
      } catch (err) {
        // Only the refused mount is expected here: that repository gets the layer from the stream.
        if (err !== notMounted) throw err;
        still.push(repo);
      }
    }
    need.repos = still;
    if (still.length === 0) compressed.set(need.diffId, known);
  }

  // ---- stream: keep manifests and configs, send layers as they pass
  const manifests = new Map<string, Buffer>();
  const configs = new Map<string, Buffer>();
  const seen = new Set<string>();
  const tasks: Array<Promise<void>> = [];
  let failure: unknown;
  const fail = (err: unknown): void => {
    if (failure === undefined) failure = err;
    controller.abort(err);
  };

  const sendLayer = async (digest: Digest, need: LayerNeed, spool: Spool, size: number): Promise<void> => {
    const open = async (): Promise<Readable> => spool.open();
    let blob: BlobSize;
    let rest = need.repos;
    if (need.raw) {
      const first = need.repos[0]!;
      const progress = new BlobProgress(options.onProgress, 'layer', need.diffId, first, undefined);
      const r = await target.pushBlobStream(first, progress.wrap(open), call);
      progress.settle(r.result, r.size);
      count(first, r.result);
      blob = { digest: r.digest, size: r.size };
      compressed.set(need.diffId, blob);
      home(blob.digest, first);
      rest = need.repos.slice(1);
    } else {
      blob = { digest, size };
    }
    // The first upload goes alone; the others can then mount what it committed.
    for (const repo of rest) {
      const progress = new BlobProgress(options.onProgress, 'layer', blob.digest, repo, blob.size);
      const mountFrom = [...(homes.get(blob.digest) ?? [])];
      const result = await target.pushBlob(repo, blob, progress.wrap(open), { ...call, mountFrom });
      progress.settle(result, blob.size);
      count(repo, result);
      home(blob.digest, repo);
    }
  };

  try {
    for await (const event of blobs) {
      if (failure !== undefined) break;
      seen.add(event.digest);
      if (event.kind === 'manifest') {
        if (event.encoding !== 'rewritten') manifests.set(event.digest, await readSmall(event.stream, `manifest ${event.digest}`));
        continue;
      }
      if (event.kind === 'config') {
        configs.set(event.digest, await readSmall(event.stream, `config ${event.digest}`));
        continue;
      }
      const need = needs.get(event.digest);
      if (need === undefined || need.repos.length === 0) continue; // left unread: the reader skips it
      const source = need.raw ? compress(event.stream, compression) : event.stream;
      let spoolCreated!: (spool: Spool) => void;
      const spoolReady = new Promise<Spool>((resolve) => (spoolCreated = resolve));
      const task = limit(async () => {
        const spool = await Spool.create(source, spoolDir, event.digest.slice(7, 19));
        spoolCreated(spool);
        try {
          await sendLayer(event.digest, need, spool, event.size);
        } finally {
          await spool.dispose();
        }
      });
      task.catch(fail);
      tasks.push(task);
      // Wait for an upload slot, then until the whole blob has passed into the spool.
      const spool = await Promise.race([spoolReady, task.then(() => undefined)]);
      if (spool !== undefined) await spool.done;
    }
  } catch (err) {
    fail(err);
  }
  await Promise.allSettled(tasks);
  if (failure !== undefined) throw failure;

  // ---- configs, manifests, indexes
  const results: PushResult[] = [];
  for (const group of groups.values()) {
    const { target: ref } = group;
    const repo = repoOf(ref);
    const source = sourceIndex(group.images, manifests, `index of ${formatReference(ref)}`);
    // A single image goes up under the tag as it is, unless the stream carries its whole index.
    const multi = group.images.length > 1 || source?.complete === true;
    const result: PushResult = { target: formatReference(ref), digest: group.images[0]!.manifestDigest, images: [], uploaded: 0, present: 0, mounted: 0 };
    const children: IndexChild[] = [];
    for (const image of group.images) {
      const name = `${image.ref} (${formatPlatform(image.platform)})`;
      const rawConfig = configs.get(image.configDigest);
      const rawManifest = manifests.get(image.manifestDigest);
      if (rawConfig === undefined || rawManifest === undefined) {
        throw new FerryError('BUNDLE_INVALID', `push ${name}: its ${rawConfig === undefined ? `config ${image.configDigest}` : `manifest ${image.manifestDigest}`} was not in the stream`);
      }
      const progress = new BlobProgress(options.onProgress, 'config', image.configDigest, repo, rawConfig.length);
      const r = await target.pushBlob(repo, { digest: image.configDigest, size: rawConfig.length }, progress.wrap(async () => Readable.from([rawConfig])), call);
      progress.settle(r, rawConfig.length);
      count(repo, r);
      let manifest: BuiltManifest = { raw: rawManifest, mediaType: image.manifestMediaType, digest: image.manifestDigest };
      const replacements: Array<{ digest: Digest; size: number; compression: PushCompression } | undefined> = [];
      for (const [i, layer] of image.layers.entries()) {
        if (layer.blob === layer.digest) {
          if (!seen.has(layer.blob) && !homes.get(layer.digest)?.has(repo.repository)) {
            // A delta leaves layers out: another repository of this registry may have them to mount.
            const missing = new FerryError('NOT_FOUND', `push ${name}: layer ${i} (${layer.digest}) is neither in the bundle nor in ${repoText(repo)}`, {
              hint: 'this is a delta bundle: push the bundle it was made against first',
            });
            const mountFrom = [...(homes.get(layer.digest) ?? [])];
            if (mountFrom.length === 0) throw missing;
            const r = await target.pushBlob(repo, { digest: layer.digest, size: layer.size }, () => Promise.reject(missing), { ...call, mountFrom });
            count(repo, r);
            home(layer.digest, repo);
          }
          replacements.push(undefined);
          continue;
        }
        const c = compressed.get(layer.diffId);
        if (c === undefined) {
          throw new FerryError('NOT_FOUND', `push ${name}: layer ${i} (diffId ${layer.diffId}) is not in the bundle`, {
            hint: 'a delta bundle with raw layers cannot be pushed on its own: import it into the store of the bundle it was made against and push from there',
          });
        }
        replacements.push({ digest: c.digest, size: c.size, compression });
      }
      if (replacements.some((x) => x !== undefined)) manifest = rewriteManifest(rawManifest, image.manifestMediaType, replacements, `manifest of ${name}`);
      const put: Reference = multi || ref.tag === undefined ? withDigest(repo, manifest.digest) : { ...repo, tag: ref.tag };
      await target.putManifest(put, manifest.raw, manifest.mediaType, call);
      result.images.push({ platform: image.platform, sourceDigest: image.manifestDigest, digest: manifest.digest, rewritten: manifest.digest !== image.manifestDigest });
      children.push({ sourceDigest: image.manifestDigest, digest: manifest.digest, size: manifest.raw.length, mediaType: manifest.mediaType, platform: image.platform });
    }
    result.digest = result.images[0]!.digest;
    const c = counts.get(repoText(repo));
    if (c !== undefined) Object.assign(result, { uploaded: c.uploaded, present: c.exists, mounted: c.mounted });
    if (multi) {
      // The source's index byte for byte when every image in it went up unchanged, else rewritten from it.
      const index = buildIndex(children, source?.index, `index of ${formatReference(ref)}`);
      const put: Reference = ref.tag !== undefined ? { ...repo, tag: ref.tag } : withDigest(repo, index.digest);
      await target.putManifest(put, index.raw, index.mediaType, call);
      result.digest = index.digest;
      result.index = { sourceDigest: source?.index.digest, digest: index.digest, rewritten: index.digest !== source?.index.digest };
    }
    results.push(result);
  }
  return results;
}
