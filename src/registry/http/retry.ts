import { withRetry, type RetryPolicy } from '../retry.js';
import type { Send } from './request.js';

/**
 * The retry layer: an exchange that fails with a temporary error (a 429/5xx the status layer
 * below turned into an error, a reset or refused connection) is sent again with backoff, or after
 * the server's Retry-After (../retry.ts decides which failures and how long). Only exchanges that
 * can be sent again are: no body or a Buffer, and not marked `retry: false` (an upload's commit).
 */
export function retrying(next: Send, policy: RetryPolicy): Send {
  return (ex) => {
    const replayable = ex.body === undefined || Buffer.isBuffer(ex.body);
    if (ex.retry === false || !replayable) return next(ex);
    return withRetry(policy, ex.signal ? { signal: ex.signal } : {}, () => next(ex));
  };
}
