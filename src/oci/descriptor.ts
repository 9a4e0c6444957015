import { FerryError } from '../errors.js';
import { isDigest, type Digest } from './digest.js';
import type { Platform } from './platform.js';

/** An OCI content descriptor: what a manifest or index says about a blob. */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

/** Validate an untrusted descriptor object; `where` names it in errors (e.g. "manifest sha256:... layer 2"). */
export function parseDescriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== 'object' || value === null) {
    throw new FerryError('INVALID_MANIFEST', `invalid descriptor in ${where}: not an object`);
  }
  const v = value as Record<string, unknown>;
  if (typeof v.mediaType !== 'string' || v.mediaType === '') {
    throw new FerryError('INVALID_MANIFEST', `invalid descriptor in ${where}: mediaType missing`);
  }
  if (typeof v.digest !== 'string' || !isDigest(v.digest)) {
    throw new FerryError('INVALID_MANIFEST', `invalid descriptor in ${where}: bad digest "${String(v.digest)}"`);
  }
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw new FerryError('INVALID_MANIFEST', `invalid descriptor in ${where}: bad size "${String(v.size)}"`);
  }
  const out: Descriptor = { mediaType: v.mediaType, digest: v.digest, size: v.size };
  if (Array.isArray(v.urls)) out.urls = v.urls.filter((u): u is string => typeof u === 'string');
  if (typeof v.annotations === 'object' && v.annotations !== null) {
    out.annotations = Object.fromEntries(
      Object.entries(v.annotations as Record<string, unknown>).filter(
        (e): e is [string, string] => typeof e[1] === 'string',
      ),
    );
  }
  if (typeof v.platform === 'object' && v.platform !== null) {
    const p = v.platform as Record<string, unknown>;
    if (typeof p.os === 'string' && typeof p.architecture === 'string') {
      out.platform = { os: p.os, architecture: p.architecture };
      if (typeof p.variant === 'string' && p.variant !== '') out.platform.variant = p.variant;
      if (typeof p['os.version'] === 'string') out.platform['os.version'] = p['os.version'];
    }
  }
  if (typeof v.artifactType === 'string') out.artifactType = v.artifactType;
  return out;
}
