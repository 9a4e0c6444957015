import { commitContainerInto, type CommitOptions, type CommitResult } from '../runtime/commit.js';
import type { Store } from '../store/index.js';
import { copyIntoStore } from './import-image.js';

export type { CommitOptions, CommitResult } from '../runtime/commit.js';

/** `ferry commit`: the runtime makes the image from the container; the transfer engine stores it. */
export function commitContainer(store: Store, container: string, options: CommitOptions = {}): Promise<CommitResult> {
  return commitContainerInto(store, container, copyIntoStore(store), options);
}
