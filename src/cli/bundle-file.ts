import { readFile } from 'node:fs/promises';
import { FerryError, UsageError, messageOf } from '../errors.js';

/** A declarative bundle definition (`ferry export -f BUNDLE.yaml`); see bundles/databases.yaml. */
export interface BundleDefinition {
  name: string | undefined;
  platforms: string[] | undefined;
  images: Array<{ ref: string; platforms: string[] | undefined }>;
  options: {
    layers?: 'raw' | 'as-pulled';
    level?: number | 'max';
    windowLog?: number;
    output?: string;
    split?: string;
  };
}

function stringList(v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v.split(',').map((s) => s.trim());
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  throw new UsageError(`${where}: expected a list of strings`);
}

export async function loadBundleDefinition(path: string): Promise<BundleDefinition> {
  let doc: unknown;
  try {
    // Loaded here, not at startup: the yaml package costs ~45 ms to load, on every ferry command.
    const { parse } = await import('yaml');
    doc = parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new FerryError('USAGE', `read bundle definition ${path}: ${messageOf(err)}`, { cause: err, hint: 'see bundles/databases.yaml for the format' });
  }
  if (typeof doc !== 'object' || doc === null) throw new UsageError(`bundle definition ${path}: not a YAML mapping`);
  const d = doc as Record<string, unknown>;
  if (!Array.isArray(d.images) || d.images.length === 0) {
    throw new UsageError(`bundle definition ${path}: "images" must list at least one image`, { hint: 'see bundles/databases.yaml' });
  }
  const images = d.images.map((item: unknown, i) => {
    if (typeof item === 'string') return { ref: item, platforms: undefined };
    if (typeof item === 'object' && item !== null && typeof (item as Record<string, unknown>).ref === 'string') {
      const o = item as Record<string, unknown>;
      return { ref: o.ref as string, platforms: stringList(o.platforms, `${path} images[${i}].platforms`) };
    }
    throw new UsageError(`bundle definition ${path}: images[${i}] must be a reference or {ref, platforms}`);
  });
  const o = (typeof d.options === 'object' && d.options !== null ? d.options : {}) as Record<string, unknown>;
  const options: BundleDefinition['options'] = {};
  if (o.layers !== undefined) {
    if (o.layers !== 'raw' && o.layers !== 'as-pulled') throw new UsageError(`${path}: options.layers must be raw or as-pulled`);
    options.layers = o.layers;
  }
  if (o.level !== undefined) {
    if (o.level !== 'max' && typeof o.level !== 'number') throw new UsageError(`${path}: options.level must be a number or max`);
    options.level = o.level;
  }
  if (typeof o.windowLog === 'number') options.windowLog = o.windowLog;
  if (typeof o.output === 'string') options.output = o.output;
  if (typeof o.split === 'string' || typeof o.split === 'number') options.split = String(o.split);
  return {
    name: typeof d.name === 'string' ? d.name : undefined,
    platforms: stringList(d.platforms, `${path} platforms`),
    images,
    options,
  };
}
