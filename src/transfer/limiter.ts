import pLimit from 'p-limit';
import { UsageError } from '../errors.js';
import type { Limiter } from '../oci/limiter.js';

/**
 * A limit of `n` tasks at once: the engine's, and the one locations are given for their own
 * streams (the registry client's blob slots), so that every bound on concurrent transfers is
 * made in one place.
 */
export function concurrencyLimit(n: number, what = 'job count'): Limiter {
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`invalid ${what} ${String(n)}: expected a whole number of at least 1`);
  const limit = pLimit(n);
  return (task) => limit(task);
}
