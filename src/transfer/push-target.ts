import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createGzip, constants as zlibConstants } from 'node:zlib';
import { UsageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { shortDigest } from '../oci/digest.js';
import { chain } from '../io/layer-forms.js';
import type { ProgressListener } from '../io/progress.js';
import { zstdCompressStream } from '../io/zstd.js';
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

/** How layers held uncompressed are compressed for a registry. */
export type PushCompression = 'gzip' | 'zstd';

export function parseCompression(text: string | undefined): PushCompression {
  if (text === undefined || text === 'gzip') return 'gzip';
  if (text === 'zstd') return 'zstd';
  throw new UsageError(`--compress "${text}": use gzip or zstd`, { hint: 'gzip is read by every engine; zstd needs containerd 1.5+, docker 23+ or podman 3+' });
}

/**
 * A compressor whose output depends only on its input: the same layer compresses to the same
 * digest on every push and every `ferry serve`, so a second push finds its blobs present.
 */
export function compressor(compression: PushCompression): Transform {
  if (compression === 'gzip') return createGzip({ level: zlibConstants.Z_DEFAULT_COMPRESSION });
  // Single-threaded: zstd's output is deterministic for a given level either way, and pushes run several at once.
  return zstdCompressStream({ level: 3, workers: 0 });
}

export function compress(tar: Readable, compression: PushCompression): Readable {
  return chain(tar, compressor(compression));
}

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

/** Counts bytes as they pass, for progress lines. */
class Counter extends Transform {
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.onBytes(chunk.length);
    done(null, chunk);
  }
}

/**
 * Progress for one blob going to one repository: every `open` (a retry too) starts the count again,
 * and `settle` reports how it ended (present and mounted blobs as skipped).
 */
export class BlobProgress {
  private readonly id: string;
  private readonly label: string;
  private sent = 0;
  private started = false;

  constructor(
    private readonly listener: ProgressListener | undefined,
    kind: string,
    digest: Digest,
    repo: Repository,
    private readonly total: number | undefined,
  ) {
    this.id = `${kind}:${digest}:${repoText(repo)}`;
    this.label = `push ${kind} ${shortDigest(digest)} to ${repo.repository}`;
  }

  wrap(open: OpenBlob): OpenBlob {
    return async (signal) => {
      const stream = await open(signal);
      this.sent = 0;
      this.started = true;
      this.listener?.({ kind: 'start', id: this.id, label: this.label, ...(this.total !== undefined ? { total: this.total } : {}) });
      return chain(
        stream,
        new Counter((n) => {
          this.sent += n;
          this.listener?.({ kind: 'advance', id: this.id, bytes: n });
        }),
      );
    };
  }

  settle(result: BlobPushResult, size: number): void {
    if (result !== 'uploaded') {
      if (!this.started) this.listener?.({ kind: 'start', id: this.id, label: this.label });
      this.listener?.({ kind: 'done', id: this.id, label: `${this.label} (${result === 'mounted' ? 'mounted' : 'present'})`, bytes: size, skipped: true });
      return;
    }
    this.listener?.({ kind: 'done', id: this.id, label: this.label, bytes: this.sent || size });
  }
}
