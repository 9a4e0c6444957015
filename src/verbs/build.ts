import { buildImageInto, type BuildOptions, type BuildResult } from '../build/builder.js';
import type { Store } from '../store/index.js';
import { copyIntoStore } from './import-image.js';

export type { BuildOptions, BuildResult } from '../build/builder.js';

/** `ferry build`: the builder runs the Dockerfile; its layers and image enter the store through the transfer engine. */
export function buildImage(store: Store, options: BuildOptions): Promise<BuildResult> {
  return buildImageInto(store, copyIntoStore(store), options);
}
