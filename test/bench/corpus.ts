import { access } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { note, sh } from './measure.js';

/**
 * The corpus of issue 7: seven images built offline from Debian packages by
 * corpus/build-corpus.sh (a copy of the team's shared script, so the bench runs on a fresh
 * machine), served by a CNCF distribution registry on 127.0.0.1:5000.
 */
export const REGISTRY = '127.0.0.1:5000';

/** [OCI layout tag, registry repository:tag] in the order of the corpus README. */
export const IMAGES: ReadonlyArray<readonly [tag: string, ref: string]> = [
  ['base-bookworm', 'library/base:bookworm'],
  ['redis-7', 'library/redis:7'],
  ['mysql-8', 'library/mysql:8'],
  ['mysql-8-patched', 'library/mysql:8-patched'],
  ['jdk-17', 'library/jdk:17'],
  ['base-bookworm-rebuilt', 'library/base:bookworm-rebuilt'],
  ['redis-7-rebuilt', 'library/redis:7-rebuilt'],
];

export const corpusDir = process.env.CORPUS_DIR ?? '/var/tmp/ferry-corpus';

/** Where the scripts are: test/bench/corpus/ in the source tree (this file runs from build/bench/bench/). */
export function scriptDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return join(here, '..', '..', '..', 'test', 'bench', 'corpus');
}

export function fullRef(ref: string): string {
  return `${REGISTRY}/${ref}`;
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export interface RegistryManifest {
  layers: Array<{ digest: string; size: number; mediaType: string }>;
  config: { digest: string; size: number };
}

/** The manifest of a corpus image, straight from the registry (plain HTTP on loopback). */
export async function registryManifest(ref: string): Promise<RegistryManifest> {
  const [repo, tag] = ref.split(':') as [string, string];
  const res = await fetch(`http://${REGISTRY}/v2/${repo}/manifests/${tag}`, { headers: { Accept: MANIFEST_TYPES } });
  if (!res.ok) throw new Error(`GET manifest ${ref}: HTTP ${res.status}`);
  return (await res.json()) as RegistryManifest;
}

async function allPresent(): Promise<boolean> {
  for (const [, ref] of IMAGES) {
    try {
      await registryManifest(ref);
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Reuse the corpus when the registry serves all seven images; else start the registry over the
 * existing data, and only if images are still missing run the (idempotent, cached) build.
 */
export async function ensureCorpus(): Promise<void> {
  const env = { ...process.env, CORPUS_DIR: corpusDir };
  const scripts = scriptDir();
  await access(join(scripts, 'build-corpus.sh'));
  if (await allPresent()) {
    note(`corpus: all ${IMAGES.length} images served by ${REGISTRY}`);
    return;
  }
  try {
    await sh(`${join(scripts, 'registry.sh')} start`, { env });
  } catch (err) {
    note(`corpus: registry did not start (${(err as Error).message.split('\n')[0]}); building`);
  }
  if (await allPresent()) {
    note(`corpus: registry started over ${corpusDir}`);
    return;
  }
  note(`corpus: building ${corpusDir} with build-corpus.sh (first time: several minutes, needs apt)`);
  await sh(`bash ${join(scripts, 'build-corpus.sh')}`, { env, echo: true });
  if (!(await allPresent())) throw new Error(`corpus: build-corpus.sh finished but ${REGISTRY} does not serve all images`);
}
