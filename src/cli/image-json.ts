import type { Image, IndexInfo } from '../oci/image.js';
import { formatPlatform } from '../oci/platform.js';

/** What `ferry inspect` prints for an image, from whichever location holds it. */
export interface ImageJson {
  name: string;
  /** The manifest digest as served; for an index inspected without --platform, the index's. */
  digest: string;
  mediaType: string;
  platform: string;
  /** Present for an index inspected without --platform: the image chosen for this host. */
  manifest?: { digest: string; mediaType: string };
  /** Present when the reference names an index: every platform it lists. */
  platforms?: string[];
  config: string;
  layers: Array<{ digest: string; size: number; mediaType: string }>;
  env: string[];
  entrypoint: string[] | null;
  cmd: string[] | null;
  workingDir: string;
  user: string;
  created: string | null;
}

export interface ImageJsonOptions {
  /** The full normalised reference the user asked for. */
  name: string;
  /** The index the image was chosen from, when the user did not pick a platform. */
  index?: IndexInfo;
  /** The platforms the index lists. */
  platforms?: string[];
}

export function imageJson(image: Image, options: ImageJsonOptions): ImageJson {
  const c = image.config.config ?? {};
  const out: ImageJson = {
    name: options.name,
    digest: options.index?.digest ?? image.digest,
    mediaType: options.index?.mediaType ?? image.mediaType,
    platform: formatPlatform(image.platform),
    config: image.configDigest,
    layers: image.layers.map((l) => ({ digest: l.descriptor.digest, size: l.descriptor.size, mediaType: l.descriptor.mediaType })),
    env: Array.isArray(c.Env) ? c.Env : [],
    entrypoint: Array.isArray(c.Entrypoint) ? c.Entrypoint : null,
    cmd: Array.isArray(c.Cmd) ? c.Cmd : null,
    workingDir: typeof c.WorkingDir === 'string' ? c.WorkingDir : '',
    user: typeof c.User === 'string' ? c.User : '',
    created: typeof image.config.created === 'string' ? image.config.created : null,
  };
  if (options.index !== undefined) out.manifest = { digest: image.digest, mediaType: image.mediaType };
  if (options.platforms !== undefined) out.platforms = options.platforms;
  return out;
}
