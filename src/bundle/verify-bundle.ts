import type { KeyObject } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform } from '../oci/platform.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.js';
import { HEADER_ENTRY, INDEX_ENTRY, REF_NAME_ANNOTATION, type BundleHeader } from './format.js';
import { openBundleStream } from './read-bundle.js';
import { publicKeyFrom, verifyHeaderSignature } from './sign.js';
import { checkTool, type ToolCheck } from './tools.js';
import type { BundleLocation } from './volumes.js';

/**
 * `ferry verify`: one pass over the bundle that checks every volume against NAME.sha256, every
 * blob's digest and size, that every image is complete (or what a delta requires), and the
 * signature. It reports every problem it can find instead of stopping at the first.
 */

export type SignatureState = 'verified' | 'invalid' | 'unsigned' | 'not-checked';

export interface VerifyReport {
  bundle: string;
  ok: boolean;
  problems: string[];
  /** Hints for the problems found, without repeats. */
  hints: string[];
  header: BundleHeader | undefined;
  signature: SignatureState;
  volumes: number;
  /** Whether the volumes were checked against a NAME.sha256 file. */
  volumeChecksums: boolean;
  blobsVerified: number;
  bytesVerified: number;
  /** Files carried beside the bundle (export --with-ferry) and what their check found. */
  tools: ToolCheck[];
}

export interface VerifyBundleOptions {
  publicKey?: KeyObject | string;
  signal?: AbortSignal;
}

export async function verifyBundle(path: string, options: VerifyBundleOptions = {}): Promise<VerifyReport> {
  const key = options.publicKey === undefined ? undefined : publicKeyFrom(options.publicKey);
  const report: VerifyReport = {
    bundle: path,
    ok: false,
    problems: [],
    hints: [],
    header: undefined,
    signature: 'not-checked',
    volumes: 0,
    volumeChecksums: false,
    blobsVerified: 0,
    bytesVerified: 0,
    tools: [],
  };
  const problem = (message: string, hint?: string): void => {
    report.problems.push(message);
    if (hint !== undefined && !report.hints.includes(hint)) report.hints.push(hint);
  };
  const small = new Map<Digest, Buffer>();
  let index: Buffer | undefined;
  const seen = new Set<Digest>();
  let location: BundleLocation | undefined;
  try {
    const events = openBundleStream(path, {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onLayoutEntry: (name, bytes) => {
        if (name === INDEX_ENTRY) index = bytes;
      },
    });
    for await (const event of events) {
      if (event.type === 'header') {
        report.header = event.header;
        const loc = event.location;
        location = loc;
        report.volumes = loc?.kind === 'volumes' ? loc.volumes.length : 1;
        report.volumeChecksums = loc?.kind === 'volumes' && loc.checksumFile !== undefined;
        if (loc?.kind === 'volumes' && loc.checksumFile === undefined) {
          problem(`${basename(loc.base)}.sha256 is missing: volumes checked only through the blob digests`, 'copy the .sha256 file along with the volumes');
        }
        if (event.signature === undefined) {
          report.signature = 'unsigned';
          if (key !== undefined) problem(`${basename(path)} is not signed, and a public key was given`, 'export it again with --sign KEY.pem');
        } else if (key !== undefined) {
          report.signature = verifyHeaderSignature(event.headerBytes, event.signature, key) ? 'verified' : 'invalid';
          if (report.signature === 'invalid') {
            problem(`the signature does not match ${HEADER_ENTRY} (altered after signing, or another key)`, 'get the bundle again from its source, and check the public key');
          }
        }
        continue;
      }
      const keep = (event.kind === 'manifest' || event.kind === 'config') && event.size <= MAX_MANIFEST_BYTES;
      const parts: Buffer[] = [];
      try {
        for await (const chunk of event.stream) {
          const b = chunk as Buffer;
          report.bytesVerified += b.length;
          if (keep) parts.push(b);
        }
        report.blobsVerified += 1;
        seen.add(event.digest);
        if (keep) small.set(event.digest, Buffer.concat(parts));
      } catch (err) {
        problem(messageOf(err), err instanceof FerryError ? err.hint : undefined);
        // A damaged volume or a broken stream ends the pass; a bad blob leaves the tar readable.
        if (!(err instanceof FerryError && err.code === 'DIGEST_MISMATCH' && err.message.includes(`blob ${event.digest}`))) break;
        seen.add(event.digest);
      }
    }
  } catch (err) {
    problem(messageOf(err), err instanceof FerryError ? err.hint : undefined);
  }
  if (report.header !== undefined && report.problems.length === 0) checkComplete(report.header, small, index, seen, problem);
  for (const tool of report.header?.tools ?? []) {
    if (location === undefined) {
      report.tools.push({ file: tool.file, path: tool.file, state: 'not-checked' });
      continue;
    }
    const dir = dirname(location.kind === 'file' ? location.path : location.base);
    const listed = location.kind === 'volumes' ? location.companions?.get(tool.file) : undefined;
    const result = await checkTool(dir, tool, listed);
    report.tools.push(result);
    if (result.problem !== undefined) {
      problem(result.problem, result.state === 'missing' ? `copy ${tool.file} along with the bundle` : `copy ${tool.file} again from the source medium (its sha256 is in ferry-bundle.json${report.signature === 'verified' ? ', which the signature covers' : ''})`);
    }
  }
  report.ok = report.problems.length === 0;
  return report;
}

/** Every image can be put together from this bundle's blobs plus what a delta requires. */
function checkComplete(
  header: BundleHeader,
  small: Map<Digest, Buffer>,
  index: Buffer | undefined,
  seen: Set<Digest>,
  problem: (message: string, hint?: string) => void,
): void {
  const required = new Set<string>();
  for (const r of header.requires) {
    required.add(r.digest);
    required.add(r.diffId);
  }
  const hint = 'export the bundle again; for a delta, check the target holds what `ferry ls` says it requires';
  for (const image of header.images) {
    const what = `image ${image.ref} (${formatPlatform(image.platform)})`;
    for (const d of [image.manifestDigest, image.configDigest, image.layoutManifestDigest]) {
      if (!seen.has(d)) problem(`${what}: blob ${d} is missing`, hint);
    }
    for (const layer of image.layers) {
      if (!seen.has(layer.blob) && !required.has(layer.blob) && !required.has(layer.digest)) {
        problem(`${what}: layer ${layer.blob} is neither in the bundle nor listed in requires`, hint);
      }
    }
    if (image.index !== undefined) {
      const d = image.index.digest;
      const bytes = small.get(d);
      if (!seen.has(d)) problem(`${what}: its index ${d} is missing`, hint);
      else if (bytes !== undefined) {
        try {
          const parsed = parseManifest(bytes, image.index.mediaType, `${what} index ${d}`);
          if (parsed.kind !== 'index') problem(`${what}: index ${d} is an image manifest, not an index`, hint);
          else if (!parsed.manifest.manifests.some((e) => e.digest === image.manifestDigest)) problem(`${what}: index ${d} does not list its manifest ${image.manifestDigest}`, hint);
        } catch (err) {
          problem(messageOf(err), hint);
        }
      }
    }
    for (const m of new Set([image.manifestDigest, image.layoutManifestDigest])) {
      const bytes = small.get(m);
      if (bytes === undefined) continue;
      try {
        const parsed = parseManifest(bytes, image.manifestMediaType, `${what} manifest ${m}`);
        if (parsed.kind !== 'image') {
          problem(`${what}: manifest ${m} is an index, not an image`, hint);
          continue;
        }
        if (parsed.manifest.config.digest !== image.configDigest) problem(`${what}: manifest ${m} names config ${parsed.manifest.config.digest}, the header ${image.configDigest}`, hint);
        for (const l of parsed.manifest.layers) {
          if (m === image.layoutManifestDigest && !seen.has(l.digest) && !required.has(l.digest)) {
            problem(`${what}: manifest ${m} needs layer ${l.digest}, which is neither in the bundle nor required`, hint);
          }
        }
      } catch (err) {
        problem(messageOf(err), hint);
      }
    }
  }
  if (index === undefined) {
    problem(`no ${INDEX_ENTRY}`, hint);
    return;
  }
  try {
    const parsed = JSON.parse(index.toString('utf8')) as { manifests?: Array<{ digest?: string; annotations?: Record<string, string> }> };
    const entries = parsed.manifests ?? [];
    for (const image of header.images) {
      const entry = entries.find((e) => e.digest === image.layoutManifestDigest && e.annotations?.[REF_NAME_ANNOTATION] === image.ref);
      if (entry === undefined) problem(`${INDEX_ENTRY} has no entry for ${image.ref} (${formatPlatform(image.platform)}) -> ${image.layoutManifestDigest}`, hint);
    }
    for (const e of entries) {
      if (typeof e.digest !== 'string' || !seen.has(e.digest as Digest)) problem(`${INDEX_ENTRY} points at ${String(e.digest)}, which is not in the bundle`, hint);
    }
  } catch (err) {
    problem(`${INDEX_ENTRY} is not valid JSON: ${messageOf(err)}`, hint);
  }
}
