import type { KeyObject } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { indexTar } from '../archive/index.js';
import { FerryError, UsageError } from '../errors.js';
import { pathExists } from '../io/atomic-file.js';
import { ZSTD_MAGIC } from '../io/zstd.js';
import type { Platform } from '../oci/platform.js';
import type { ProgressListener } from '../oci/progress-event.js';
import type { Store } from '../store/index.js';
import type { CopyResult } from '../transfer/copy-images.js';
import { importArchive } from './import-archive.js';
import { importBundle, type ImportBundleSummary } from './import-bundle.js';

export type ImportKind = 'bundle' | 'docker-archive' | 'oci-archive' | 'oci';

/**
 * What the user gave `import`: a transport prefix decides; else a bundle (zstd, volumes, stdin)
 * or a plain tar by its content (docker load habits: no prefix needed for a file).
 */
export async function detectImportSource(source: string): Promise<{ kind: ImportKind; spec: string }> {
  const m = /^(docker-archive|oci-archive|oci):/.exec(source);
  if (m) return { kind: m[1] as ImportKind, spec: source };
  if (source === '-') return { kind: 'bundle', spec: source };
  if (!(await pathExists(source))) {
    if (await pathExists(`${source}.001`)) return { kind: 'bundle', spec: source };
    throw new UsageError(`import ${source}: no such file`, { hint: 'give a bundle (.tar.zst or its volumes), a docker-archive or OCI archive tar, or oci:DIR' });
  }
  const st = await stat(source);
  if (st.isDirectory()) return { kind: 'oci', spec: `oci:${source}` };
  const handle = await open(source, 'r');
  const head = Buffer.alloc(4);
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  if (head.equals(ZSTD_MAGIC) || /\.\d{3}$/.test(source)) return { kind: 'bundle', spec: source };
  const index = await indexTar(source, `archive ${source}`);
  // docker 25+ (and ferry save) write both: loaded as docker load does, every image under its RepoTags.
  if (index.entries.has('manifest.json')) return { kind: 'docker-archive', spec: `docker-archive:${source}` };
  if (index.entries.has('oci-layout')) return { kind: 'oci-archive', spec: `oci-archive:${source}` };
  throw new FerryError('UNSUPPORTED', `import ${source}: neither a ferry bundle, a docker-archive nor an OCI archive`, {
    hint: 'name the format with a prefix: docker-archive:FILE, oci-archive:FILE, oci:DIR',
  });
}

export interface ImportImagesOptions {
  /** Platforms to import: default every image of a bundle, this host's from an archive. */
  platforms?: Platform[] | 'all';
  /** Bundles only: refuse one not signed with this key. */
  publicKey?: KeyObject | string;
  keepBlobs?: boolean;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  onWarning?: (message: string) => void;
}

export type ImportResult = { kind: 'bundle'; summary: ImportBundleSummary } | { kind: Exclude<ImportKind, 'bundle'>; results: CopyResult[] };

/** `ferry import SOURCE`: a bundle, docker-archive, OCI archive or layout, copied into the store. */
export async function importImages(store: Store, source: string, options: ImportImagesOptions = {}): Promise<ImportResult> {
  const { kind, spec } = await detectImportSource(source);
  const common = {
    ...(options.keepBlobs === undefined ? {} : { keepBlobs: options.keepBlobs }),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.onWarning ? { onWarning: options.onWarning } : {}),
  };
  if (kind === 'bundle') {
    if (options.platforms === 'all') throw new UsageError('import: --platform all is the default for bundles; leave it out');
    const summary = await importBundle(store, spec, {
      ...common,
      ...(options.platforms ? { platforms: options.platforms } : {}),
      ...(options.publicKey ? { publicKey: options.publicKey } : {}),
    });
    return { kind, summary };
  }
  if (options.publicKey !== undefined) throw new UsageError('import: --key applies to bundles only');
  return { kind, results: await importArchive(store, spec, { ...common, ...(options.platforms ? { platforms: options.platforms } : {}) }) };
}
