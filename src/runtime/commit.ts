import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, UsageError, isFerryError } from '../errors.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/descriptor.js';
import type { Image, Layer } from '../oci/image.js';
import { configPlatform, parseImageConfig, parseManifest, type ContainerConfig, type HistoryEntry, type ImageConfig } from '../oci/manifest.js';
import { imageConfig, imageManifest } from '../oci/build-image.js';
import { MediaType, layerMediaTypeFor } from '../oci/media-types.js';
import { parseReference, withTag, type Reference } from '../oci/reference.js';
import { layerFromBlob } from '../io/layer-forms.js';
import type { CopyInto } from '../oci/destination.js';
import { openStoreImageByDigest, type Store } from '../store/index.js';
import { ownedName } from '../store/index.js';
import { containerCgroups } from './cgroups.js';
import { commandLine } from './containers.js';
import { upperLayerTar, writeLayerFile, type WrittenLayer } from './layer-tar.js';
import { pauseContainer, type Resume } from './pause.js';
import { containerPaths, findContainer, isAlive, type ContainerInfo, type ContainerRecord } from './state.js';
import { isoTime } from '../io/iso-time.js';

/**
 * `ferry commit`: a container's upper layer becomes a new layer on top of its image (overlay
 * whiteouts back to `.wh.` entries, see layer-tar.ts), the config gets the container's settings,
 * the -c changes, the new diff_id and a history entry, and the result is imported into the store
 * like any other image, so it runs, exports and pushes.
 */
export interface CommitOptions {
  /** IMAGE[:TAG] to name the result; none: the image is stored by digest only. */
  ref?: string;
  /** Dockerfile instructions: CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL. */
  changes?: readonly string[];
  message?: string;
  author?: string;
  /** The creation time (default now); fixed in tests. */
  created?: Date;
  /**
   * Stop a running container's processes while its files are read (default true, as docker):
   * otherwise the layer mixes files from before and after its changes.
   */
  pause?: boolean;
}

export interface CommitResult {
  manifestDigest: Digest;
  name: string | undefined;
  diffId: Digest;
  layerDigest: Digest;
  layerSize: number;
}

/** Dockerfile-style arguments: a JSON array (exec form) or a shell command (shell form). */
function execOrShell(rest: string, what: string): string[] {
  if (rest.startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(rest);
    } catch (err) {
      throw new UsageError(`--change ${what}: ${rest} is not a JSON array`, { cause: err });
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new UsageError(`--change ${what}: expected a JSON array of strings`);
    return v as string[];
  }
  return ['/bin/sh', '-c', rest];
}

/** `K=V K2="V 2"` pairs (or the legacy `K V` form), with double quotes and backslash escapes. */
function keyValues(rest: string, what: string): Array<[string, string]> {
  const words: string[] = [];
  let cur = '';
  let quoted = false;
  let started = false;
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i]!;
    if (c === '\\' && i + 1 < rest.length) {
      cur += rest[++i];
      started = true;
    } else if (c === '"') {
      quoted = !quoted;
      started = true;
    } else if (/\s/.test(c) && !quoted) {
      if (started) words.push(cur);
      cur = '';
      started = false;
    } else {
      cur += c;
      started = true;
    }
  }
  if (quoted) throw new UsageError(`--change ${what}: unterminated quote`);
  if (started) words.push(cur);
  if (words.length === 0) throw new UsageError(`--change ${what}: nothing to set`);
  if (!words[0]!.includes('=')) {
    // Legacy form: ENV KEY value with spaces
    const m = /^\s*(\S+)\s+(.*)$/.exec(rest);
    if (!m) throw new UsageError(`--change ${what}: expected KEY=VALUE`);
    return [[m[1]!, m[2]!]];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new UsageError(`--change ${what}: "${w}" is not KEY=VALUE`);
    return [w.slice(0, eq), w.slice(eq + 1)] as [string, string];
  });
}

/** Apply `docker commit --change` instructions to a container config. */
export function applyChanges(config: ContainerConfig, changes: readonly string[]): ContainerConfig {
  const out: ContainerConfig = { ...config };
  for (const change of changes) {
    const m = /^\s*(\w+)\s*(.*?)\s*$/s.exec(change);
    if (!m) throw new UsageError(`--change "${change}": expected an instruction such as CMD ["sh"]`);
    const instruction = m[1]!.toUpperCase();
    const rest = m[2]!;
    switch (instruction) {
      case 'CMD':
        out.Cmd = execOrShell(rest, instruction);
        break;
      case 'ENTRYPOINT':
        out.Entrypoint = execOrShell(rest, instruction);
        break;
      case 'ENV': {
        let env = [...(out.Env ?? [])];
        for (const [k, v] of keyValues(rest, instruction)) env = [...env.filter((e) => !e.startsWith(`${k}=`)), `${k}=${v}`];
        out.Env = env;
        break;
      }
      case 'LABEL':
        out.Labels = { ...(out.Labels ?? {}), ...Object.fromEntries(keyValues(rest, instruction)) };
        break;
      case 'USER':
        out.User = rest;
        break;
      case 'WORKDIR':
        out.WorkingDir = rest;
        break;
      case 'STOPSIGNAL':
        out.StopSignal = rest;
        break;
      case 'EXPOSE': {
        const ports = { ...(out.ExposedPorts ?? {}) };
        for (const p of rest.split(/\s+/).filter((x) => x !== '')) ports[p.includes('/') ? p : `${p}/tcp`] = {};
        out.ExposedPorts = ports;
        break;
      }
      case 'VOLUME': {
        const vols = { ...(out.Volumes ?? {}) };
        const list = rest.startsWith('[') ? execOrShell(rest, instruction) : rest.split(/\s+/).filter((x) => x !== '');
        for (const v of list) vols[v] = {};
        out.Volumes = vols;
        break;
      }
      default:
        throw new UsageError(`--change "${change}": ${instruction} cannot be changed by commit`, {
          hint: 'supported: CMD, ENTRYPOINT, ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL',
        });
    }
  }
  return out;
}

function commitRef(text: string): Reference {
  const ref = parseReference(text);
  if (ref.digest !== undefined) throw new UsageError(`commit: name the new image with a tag, not a digest (${text})`);
  return ref.tag === undefined ? withTag(ref, 'latest') : ref;
}

/**
 * The container's image: from the store, or, when it was removed from the store since (rmi and
 * prune keep a container's layers but not the image's blobs), from the raw manifest and config
 * the container kept, its layers then usable only unpacked.
 */
async function baseImage(store: Store, record: ContainerRecord): Promise<Image> {
  try {
    return await openStoreImageByDigest(store, record.image.digest);
  } catch (err) {
    if (!isFerryError(err, 'NOT_FOUND')) throw err;
  }
  const paths = containerPaths(store.root, record.id);
  const rawManifest = await readFile(paths.imageManifest);
  const rawConfig = await readFile(paths.imageConfig);
  if (digestOf(rawManifest) !== record.image.digest || digestOf(rawConfig) !== record.image.configDigest) {
    throw new FerryError('STORE_ERROR', `commit container ${record.name}: its copy of image ${record.image.name} does not match ${record.image.digest}`, {
      hint: 'the container directory was changed; the container cannot be committed',
    });
  }
  const parsed = parseManifest(rawManifest, undefined, `image of container ${record.name}`);
  if (parsed.kind !== 'image') throw new FerryError('STORE_ERROR', `image ${record.image.digest} of container ${record.name} is not an image manifest`);
  const config = parseImageConfig(rawConfig, `config of container ${record.name}'s image`);
  const unpackedOnly = async (): Promise<Readable> => {
    throw new FerryError('NOT_FOUND', `image ${record.image.name} is no longer in the store: its layers exist only unpacked`);
  };
  return {
    ref: undefined,
    digest: record.image.digest,
    mediaType: parsed.mediaType,
    rawManifest,
    manifest: parsed.manifest,
    configDigest: record.image.configDigest,
    rawConfig,
    config,
    platform: configPlatform(config),
    layers: parsed.manifest.layers.map((descriptor, i) => ({ descriptor, diffId: config.rootfs.diff_ids[i]!, stored: 'tar' as const, blob: unpackedOnly, tar: unpackedOnly })),
  };
}

/** The container's freezer cgroup, when it has one that holds its init (older containers have none). */
async function freezerOf(id: string, initPid: number): Promise<string | undefined> {
  const { freezer } = containerCgroups(id);
  if (freezer === undefined) return undefined;
  let procs: string;
  try {
    procs = await readFile(join(freezer, 'cgroup.procs'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return procs.split('\n').includes(String(initPid)) ? freezer : undefined;
}

/** Pause a running container (see pause.ts); undefined when it does not run (nothing to pause). */
async function pauseForCommit(info: ContainerInfo): Promise<Resume | undefined> {
  const s = info.state;
  if (info.status !== 'running' || s === undefined || !isAlive(s.pid, s.pidStart)) return undefined;
  const freezer = await freezerOf(info.record.id, s.pid);
  return pauseContainer(s.pid, { what: `container ${info.record.name}`, ...(freezer !== undefined ? { freezer } : {}) });
}

/**
 * Commit a container: its upper directory as a new layer on its image, with its config; the image
 * goes into the store through `copyInto` (verbs/commit.ts gives the transfer engine's copy).
 */
export async function commitContainerInto(store: Store, text: string, copyInto: CopyInto, options: CommitOptions = {}): Promise<CommitResult> {
  const ref = options.ref === undefined ? undefined : commitRef(options.ref);
  const info = await findContainer(store.root, text);
  const record = info.record;
  const base = await baseImage(store, record);
  const docker = base.mediaType === MediaType.dockerManifest;
  const created = isoTime(options.created);

  await mkdir(store.tmpDir, { recursive: true });
  const blobPath = join(store.tmpDir, ownedName('commit-layer'));
  try {
    let written: WrittenLayer;
    const resume = options.pause === false ? undefined : await pauseForCommit(info);
    try {
      written = await writeLayerFile(upperLayerTar(containerPaths(store.root, record.id).upper, { what: `commit container ${record.name}` }), blobPath);
    } finally {
      // Only the reading of its files: storing the image does not need the container stopped.
      await resume?.();
    }
    const diffId = written.diffId;
    const descriptor: Descriptor = { mediaType: layerMediaTypeFor('gzip', docker), digest: written.digest, size: written.size };
    const newLayer = layerFromBlob({ descriptor, diffId, what: `commit of container ${record.name}`, openBlob: async () => createReadStream(blobPath) });

    // The base's layers as the store holds them: a layer kept only unpacked must not be asked for its blob.
    const baseLayers: Layer[] = [];
    for (const l of base.layers) baseLayers.push((await store.blobs.has(l.descriptor.digest)) ? l : { ...l, stored: 'tar' });

    const parsedConfig = JSON.parse(base.rawConfig.toString('utf8')) as ImageConfig;
    const containerConfig: ContainerConfig = {
      ...(parsedConfig.config ?? {}),
      Entrypoint: record.config.Entrypoint,
      Cmd: record.config.Cmd,
      Env: record.config.Env,
      WorkingDir: record.config.WorkingDir,
      User: record.config.User,
    };
    const history: HistoryEntry = { created, created_by: commandLine(record) };
    if (options.message !== undefined) history.comment = options.message;
    if (options.author !== undefined) history.author = options.author;
    const { raw: rawConfig, config, digest: configDigest } = imageConfig(parsedConfig, {
      created,
      ...(options.author !== undefined ? { author: options.author } : {}),
      config: applyChanges(containerConfig, options.changes ?? []),
      diffIds: [...parsedConfig.rootfs.diff_ids, diffId],
      history: [...(parsedConfig.history ?? []), history],
    });
    const { raw: rawManifest, manifest } = imageManifest(docker ? MediaType.dockerManifest : MediaType.ociManifest, { digest: configDigest, size: rawConfig.length }, [...base.manifest.layers, descriptor]);
    const image: Image = {
      ref,
      digest: digestOf(rawManifest),
      mediaType: manifest.mediaType,
      rawManifest,
      manifest,
      configDigest,
      rawConfig,
      config,
      platform: base.platform,
      layers: [...baseLayers, newLayer],
    };
    const [name] = await copyInto([{ ref, images: [image] }]);
    return { manifestDigest: image.digest, name, diffId, layerDigest: descriptor.digest, layerSize: descriptor.size };
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError('IO_ERROR', `commit container ${record.name}: ${(err as Error).message}`, { cause: err });
  } finally {
    await rm(blobPath, { force: true });
  }
}
