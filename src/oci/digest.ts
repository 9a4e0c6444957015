import type { Hash } from 'node:crypto';
import { createRequire } from 'node:module';
import { FerryError } from '../errors.js';

// node:crypto on first use, as io/builtins.ts loads it (oci/ imports no io/): most commands that
// parse a digest never hash, and loading it costs a container start 6 to 11 ms.
let crypto: typeof import('node:crypto') | undefined;
function nodeCrypto(): typeof import('node:crypto') {
  return (crypto ??= createRequire('/')('node:crypto') as typeof import('node:crypto'));
}

/** `sha256:<64 hex>` (or sha512). A branded string so digests are never confused with text. */
export type Digest = string & { readonly __digest: unique symbol };

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const DIGEST_RE = /^(sha256|sha512):([a-f0-9]+)$/;

export function isDigest(value: string): value is Digest {
  const m = DIGEST_RE.exec(value);
  if (!m) return false;
  const algorithm = m[1] as DigestAlgorithm;
  return m[2]!.length === HEX_LENGTH[algorithm];
}

export function parseDigest(value: string, what = 'digest'): Digest {
  if (!isDigest(value)) {
    throw new FerryError('INVALID_DIGEST', `invalid ${what} "${value}": expected sha256:<64 hex digits>`);
  }
  return value;
}

export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return digest.slice(0, digest.indexOf(':')) as DigestAlgorithm;
}

export function digestHex(digest: Digest): string {
  return digest.slice(digest.indexOf(':') + 1);
}

export function sha256Digest(hex: string): Digest {
  return parseDigest(`sha256:${hex}`);
}

/**
 * `algorithm:hex` as one flat string: a concatenation would be a string of two parts (three
 * objects, 136 bytes for 88), and digests are kept by the thousand (every image's blobs).
 */
function digestText(algorithm: DigestAlgorithm, hex: string): Digest {
  return [algorithm, ':', hex].join('') as Digest;
}

/** Digest of bytes held in memory (manifests, configs). */
export function digestOf(bytes: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return digestText(algorithm, nodeCrypto().createHash(algorithm).update(bytes).digest('hex'));
}

/** Incremental digester for streamed bytes. */
export class Digester {
  readonly algorithm: DigestAlgorithm;
  private readonly hash: Hash;
  size = 0;

  constructor(algorithm: DigestAlgorithm = 'sha256') {
    this.algorithm = algorithm;
    this.hash = nodeCrypto().createHash(algorithm);
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.size += chunk.length;
  }

  digest(): Digest {
    return digestText(this.algorithm, this.hash.digest('hex'));
  }
}

/** Short form for display: the first 12 hex digits, as docker prints IDs. */
export function shortDigest(digest: Digest): string {
  return digestHex(digest).slice(0, 12);
}
