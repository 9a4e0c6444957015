import { lstat, readlink, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { isFerryError, messageOf } from '../errors.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { VerifyDigest } from '../io/verify-digest.js';
import { parseImageConfig, parseManifest } from '../oci/manifest.js';
import { danglingLinks } from './gc.js';
import { chainIds } from './layers.js';
import type { RefEntry } from './refs.js';
import type { Store } from './store.js';

export type ProblemKind =
  | 'blob-corrupt'
  | 'blob-stray'
  | 'layer-incomplete'
  | 'layer-orphan'
  | 'layer-link'
  | 'layer-split'
  | 'layer-corrupt'
  | 'ref-broken'
  | 'refs-unreadable'
  | 'tmp-leftover';

export interface Problem {
  kind: ProblemKind;
  /** The digest, chainId, ref name or path concerned. */
  subject: string;
  message: string;
  repaired: boolean;
}

export interface FsckResult {
  problems: Problem[];
  blobsChecked: number;
  layersChecked: number;
  refsChecked: number;
}

/**
 * Check the store: every blob hashes to its name, every layer directory is complete (meta.json,
 * diff/, its l/ link, its parent present), every ref names a present manifest, config and layer
 * chain, and tmp/ holds nothing from dead processes. Each layer has its tar-split or is marked
 * not reproducible; `deep` also reproduces every layer's tar from it and checks the diffId (reads
 * every layer: slow). `repair` removes what is bad (blobs, layers, refs, leftovers), recreates
 * missing links and marks layers whose split is lost as not reproducible; importing the images
 * again restores them. `quick` skips hashing the blobs.
 */
export async function fsck(store: Store, options: { repair?: boolean; deep?: boolean; quick?: boolean } = {}): Promise<FsckResult> {
  const repair = options.repair ?? false;
  const problems: Problem[] = [];
  const add = (kind: ProblemKind, subject: string, message: string): Problem => {
    const p: Problem = { kind, subject, message, repaired: false };
    problems.push(p);
    return p;
  };
  const result: FsckResult = { problems, blobsChecked: 0, layersChecked: 0, refsChecked: 0 };

  for (const digest of await store.blobs.list()) {
    result.blobsChecked++;
    // quick (`ferry doctor`): the structure only; hashing every blob can take minutes.
    if (options.quick !== true && !(await store.blobs.verify(digest))) {
      const p = add('blob-corrupt', digest, `blob ${digest}: its bytes do not hash to its name`);
      if (repair) {
        await store.lock.with(() => store.blobs.delete(digest));
        p.repaired = true;
      }
    }
  }
  for (const path of await store.blobs.strays()) {
    const p = add('blob-stray', path, `${path}: not named by a digest`);
    if (repair) {
      await rm(path, { recursive: true, force: true });
      p.repaired = true;
    }
  }

  const present = new Set<string>();
  for (const hex of await store.layers.ids()) {
    result.layersChecked++;
    const chainId = `sha256:${hex}`;
    const dir = join(store.layers.dir, hex);
    let why: string | undefined;
    if (!isDigest(chainId)) why = 'not named by a chainId';
    else {
      try {
        const meta = await store.layers.meta(chainId);
        if (meta === undefined) why = 'meta.json is missing (an interrupted unpack)';
        else if (meta.chainId !== chainId) why = `meta.json names ${meta.chainId}`;
        else if (!(await isDir(join(dir, 'diff')))) why = 'diff/ is missing';
      } catch (err) {
        if (!isFerryError(err, 'STORE_ERROR')) throw err;
        why = messageOf(err);
      }
    }
    if (why !== undefined) {
      const p = add('layer-incomplete', chainId, `layer ${hex}: ${why}`);
      if (repair) {
        await store.layers.dispose(await store.lock.with(() => store.layers.detachUnlocked(hex)));
        p.repaired = true;
      }
    } else {
      present.add(chainId);
    }
  }
  for (const chainId of present) {
    const meta = (await store.layers.meta(chainId as Digest))!;
    if (meta.parent !== null && !present.has(meta.parent)) {
      add('layer-orphan', chainId, `layer ${chainId}: its parent ${meta.parent} is missing`);
    }
    let linkOk = false;
    try {
      linkOk = (await readlink(join(store.layers.linkDir, meta.link))) === join('..', 'layers', chainId.slice(7), 'diff');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (!linkOk) {
      const p = add('layer-link', chainId, `layer ${chainId}: link l/${meta.link} is missing or wrong`);
      if (repair) {
        await store.lock.with(async () => {
          await rm(join(store.layers.linkDir, meta.link), { force: true });
          await store.layers.ensureLink(meta.chainId, meta.link);
        });
        p.repaired = true;
      }
    }
  }
  for (const chainId of present) {
    const meta = (await store.layers.meta(chainId as Digest))!;
    let why: string | undefined;
    if (meta.tarSplit === undefined) why = 'it has no tar-split and is not marked as not reproducible (unpacked by an older ferry)';
    else if (meta.tarSplit === 'kept' && !(await exists(store.layers.tarSplitPath(meta.chainId)))) why = 'its tar-split is missing';
    if (why !== undefined) {
      const p = add('layer-split', chainId, `layer ${chainId}: ${why}; its original tar cannot be given back`);
      if (repair) {
        await store.layers.markNotReproducible(meta.chainId, why);
        p.repaired = true;
      }
      continue;
    }
    if (options.deep !== true || meta.tarSplit !== 'kept') continue;
    const what = `layer ${chainId}`;
    const open = await store.layers.openTar(meta.chainId, what);
    try {
      await pipeline(open!(), new VerifyDigest(meta.diffId, { size: meta.size, what: `${what} (diffId ${meta.diffId})` }), async function* (source: AsyncIterable<Buffer>) {
        for await (const _chunk of source);
      });
    } catch (err) {
      if (!isFerryError(err)) throw err;
      const p = add('layer-corrupt', chainId, `${what}: its files no longer make its tar: ${messageOf(err)}`);
      if (repair) {
        await store.layers.dispose(await store.lock.with(() => store.layers.detachUnlocked(chainId.slice(7))));
        p.repaired = true;
      }
    }
  }
  for (const name of await danglingLinks(store)) {
    const p = add('layer-link', `l/${name}`, `l/${name}: points to no layer`);
    if (repair) {
      await rm(join(store.layers.linkDir, name), { force: true });
      p.repaired = true;
    }
  }
  // Orphans: a layer whose parent is gone can never be used; repair removes it (and above it).
  if (repair) {
    for (const p of problems.filter((x) => x.kind === 'layer-orphan')) {
      await store.layers.dispose(await store.lock.with(() => store.layers.detachUnlocked(p.subject.slice(7))));
      p.repaired = true;
    }
  }

  let refs: RefEntry[];
  try {
    refs = await store.refs.list();
  } catch (err) {
    if (!isFerryError(err, 'STORE_ERROR')) throw err;
    const p = add('refs-unreadable', store.refs.path, messageOf(err));
    if (repair) {
      p.message += ` (kept as ${await store.refs.reset()}; import the images again)`;
      p.repaired = true;
    }
    refs = [];
  }
  const layersNow = new Set((await store.layers.list()).map((m) => m.chainId as string));
  for (const ref of refs) {
    result.refsChecked++;
    const why = await refProblem(store, ref.manifestDigest, ref.mediaType, layersNow);
    if (why !== undefined) {
      const p = add('ref-broken', ref.name, `${ref.name} (${ref.platform.os}/${ref.platform.architecture}): ${why}`);
      if (repair) {
        await store.refs.remove(ref.name, ref.platform);
        p.repaired = true;
      }
    }
  }

  for (const name of await store.deadTmpEntries()) {
    const p = add('tmp-leftover', join(store.tmpDir, name), `tmp/${name}: left by a process that is gone`);
    if (repair) {
      await rm(join(store.tmpDir, name), { recursive: true, force: true });
      p.repaired = true;
    }
  }
  return result;
}

async function refProblem(store: Store, manifestDigest: Digest, mediaType: string, layers: Set<string>): Promise<string | undefined> {
  if (!(await store.blobs.has(manifestDigest))) return `manifest ${manifestDigest} is missing`;
  try {
    const parsed = parseManifest(await store.blobs.read(manifestDigest), mediaType, `manifest ${manifestDigest}`);
    if (parsed.kind !== 'image') return `${manifestDigest} is not an image manifest`;
    const configDigest = parsed.manifest.config.digest;
    if (!(await store.blobs.has(configDigest))) return `config ${configDigest} is missing`;
    const config = parseImageConfig(await store.blobs.read(configDigest), `config ${configDigest}`);
    for (const id of chainIds(config.rootfs.diff_ids)) {
      if (!layers.has(id)) return `layer ${id} is missing`;
    }
  } catch (err) {
    if (isFerryError(err)) return messageOf(err);
    throw err;
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

