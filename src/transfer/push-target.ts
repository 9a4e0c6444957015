import type { Readable } from 'node:stream';
import { UsageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { shortDigest } from '../oci/digest.js';
import { CopyProgress } from '../io/copy-progress.js';
import type { ProgressListener } from '../io/progress.js';
import type { Platform } from '../oci/platform.js';
import { parseReference, type Reference } from '../oci/reference.js';

/**
 * What a push needs from a registry, as a small interface: the registry client satisfies it, and
 * the transfer code never names a location. `open` functions may be called again for a retry.
 */
export interface Repository {
  registry: string;
  repository: string;
}

export type BlobPushResult = 'exists' | 'mounted' | 'uploaded';

export interface BlobSize {
  digest: Digest;
  size: number;
}

export type OpenBlob = (signal?: AbortSignal) => Promise<Readable>;

export interface PushTarget {
  /** The blob's size when the repository has it, else undefined. */
  headBlob(repo: Repository, digest: Digest, options?: { signal?: AbortSignal; push?: boolean }): Promise<number | undefined>;
  /** Push a blob of known digest unless present; mount it from `mountFrom` repositories where possible. */
  pushBlob(repo: Repository, blob: BlobSize, open: OpenBlob, options?: { signal?: AbortSignal; mountFrom?: readonly string[] }): Promise<BlobPushResult>;
  /** Push a blob whose digest is known only at its end (compressed on the way). */
  pushBlobStream(repo: Repository, open: OpenBlob, options?: { signal?: AbortSignal }): Promise<BlobSize & { result: BlobPushResult }>;
  putManifest(ref: Reference, raw: Buffer, mediaType: string, options?: { signal?: AbortSignal }): Promise<Digest>;
  /** A manifest or index as the registry holds it; rejects with NOT_FOUND when there is none. */
  getManifest(ref: Reference, options?: { signal?: AbortSignal }): Promise<{ digest: Digest; mediaType: string; raw: Buffer }>;
}

export { compress, compressor, parseCompression, type PushCompression } from '../io/layer-compress.js';

/**
 * `--all REGISTRY[/PREFIX]` naming: the source registry is replaced, the repository path kept:
 * `docker.io/library/redis:7` -> `REGISTRY/PREFIX/library/redis:7`.
 */
export interface Destination {
  registry: string;
  prefix: string | undefined;
}

export function parseDestination(text: string): Destination {
  const trimmed = text.replace(/\/+$/, '');
  const slash = trimmed.indexOf('/');
  const registry = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const prefix = slash < 0 ? undefined : trimmed.slice(slash + 1);
  // Reuse the reference grammar to check host and path components.
  const probe = parseReference(`${registry}/${prefix ?? 'x'}/x:latest`);
  if (probe.registry !== registry) {
    throw new UsageError(`destination "${text}": "${registry}" is not a registry host`, { hint: 'write REGISTRY[/PREFIX], e.g. registry.internal:5000/mirror' });
  }
  return { registry, prefix };
}

export function reroot(ref: Reference, destination: Destination): Reference {
  const repository = destination.prefix === undefined ? ref.repository : `${destination.prefix}/${ref.repository}`;
  const out: Reference = { registry: destination.registry, repository };
  if (ref.tag !== undefined) out.tag = ref.tag;
  if (ref.digest !== undefined) out.digest = ref.digest;
  return out;
}

export function repoText(repo: Repository): string {
  return `${repo.registry}/${repo.repository}`;
}

/** Progress of one blob going to one repository (see CopyProgress). */
export class BlobProgress extends CopyProgress {
  constructor(listener: ProgressListener | undefined, kind: string, digest: Digest, repo: Repository, total: number | undefined) {
    super(listener, `${kind}:${digest}:${repoText(repo)}`, `push ${kind} ${shortDigest(digest)} to ${repo.repository}`, total);
  }
}

export interface PushedImage {
  platform: Platform;
  /** The manifest digest in the source. */
  sourceDigest: Digest;
  /** The manifest digest pushed: the same unless layers were compressed. */
  digest: Digest;
  rewritten: boolean;
}

export interface PushResult {
  /** Full reference pushed, with its tag. */
  target: string;
  /** What the tag points at: the manifest, or the index. */
  digest: Digest;
  images: PushedImage[];
  index?: { sourceDigest: Digest | undefined; digest: Digest; rewritten: boolean };
  /** Blobs uploaded / found present / mounted, over this request. */
  uploaded: number;
  present: number;
  mounted: number;
}

