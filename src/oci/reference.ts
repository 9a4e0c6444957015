import { FerryError } from '../errors.js';
import { isDigest, type Digest } from './digest.js';

export const DEFAULT_REGISTRY = 'docker.io';
export const DEFAULT_TAG = 'latest';

/** A fully normalised image reference: `registry/repository[:tag][@digest]`. */
export interface Reference {
  /** Registry host[:port] as the user wrote it, `docker.io` for Docker Hub. */
  registry: string;
  /** Repository path, `library/redis` for Docker Hub official images. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

const TAG_RE = /^[\w][\w.-]{0,127}$/;
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?$/;
const IPV6_HOST_RE = /^\[[0-9a-fA-F:.]+\](?::\d+)?$/;

function invalid(text: string, why: string): FerryError {
  return new FerryError('INVALID_REFERENCE', `invalid image reference "${text}": ${why}`, {
    hint: 'write it as docker does, e.g. redis, redis:7, registry.example:5000/team/app:1.2 or name@sha256:...',
  });
}

/**
 * Parse with docker's normalisation: `redis` -> `docker.io/library/redis:latest`; the first path
 * component is a registry when it has a `.` or `:` or is `localhost`.
 */
export function parseReference(text: string): Reference {
  const input = text.trim();
  if (input === '') throw invalid(text, 'empty');
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw invalid(text, `bad digest "${d}"`);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(text, `bad tag "${tag}"`);
  }
  let registry = DEFAULT_REGISTRY;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      // The constant when it is the default: a reference is kept per image (thousands in a bundle).
      registry = first === DEFAULT_REGISTRY ? DEFAULT_REGISTRY : first;
      repository = rest.slice(slash + 1);
    }
  }
  if (!HOST_RE.test(registry) && !IPV6_HOST_RE.test(registry)) throw invalid(text, `bad registry host "${registry}"`);
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DEFAULT_REGISTRY;
  if (repository === '') throw invalid(text, 'missing repository name');
  if (repository !== repository.toLowerCase()) throw invalid(text, 'repository names must be lowercase');
  const components = repository.split('/');
  for (const c of components) {
    if (!COMPONENT_RE.test(c)) throw invalid(text, `bad path component "${c}"`);
  }
  if (registry === DEFAULT_REGISTRY && components.length === 1) repository = `library/${repository}`;
  if (repository.length > 255) throw invalid(text, 'repository name longer than 255 characters');
  const ref: Reference = { registry, repository };
  if (tag !== undefined) ref.tag = tag === DEFAULT_TAG ? DEFAULT_TAG : tag;
  else if (digest === undefined) ref.tag = DEFAULT_TAG;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `registry/repository` */
export function referenceName(ref: Reference): string {
  return `${ref.registry}/${ref.repository}`;
}

/**
 * The full normalised text: `docker.io/library/redis:latest`, `host:5000/a/b:t@sha256:...`.
 * Joined, not concatenated: a concatenation is a string of its parts (three or five objects), and
 * the text is kept per image.
 */
export function formatReference(ref: Reference): string {
  const parts = [ref.registry, '/', ref.repository];
  if (ref.tag !== undefined) parts.push(':', ref.tag);
  if (ref.digest !== undefined) parts.push('@', ref.digest);
  return parts.join('');
}

/** Docker's short display form: `redis:7` for Docker Hub library images, else the full text. */
export function familiarReference(ref: Reference): string {
  let name = referenceName(ref);
  if (ref.registry === DEFAULT_REGISTRY) {
    name = ref.repository.startsWith('library/') ? ref.repository.slice('library/'.length) : ref.repository;
  }
  let s = name;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** The tag or digest to ask a registry for: the digest wins when both are given (docker habit). */
export function referenceSelector(ref: Reference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

export function withTag(ref: Reference, tag: string): Reference {
  return { registry: ref.registry, repository: ref.repository, tag };
}

export function withDigest(ref: Reference, digest: Digest): Reference {
  const out: Reference = { registry: ref.registry, repository: ref.repository, digest };
  if (ref.tag !== undefined) out.tag = ref.tag;
  return out;
}
