import { FerryError, type ErrorCode, type FerryErrorOptions } from '../errors.js';
import { abortError } from './transport.js';

/**
 * The retry layer: temporary failures (429, 5xx, dropped or refused connections) are tried again
 * with exponential backoff, honouring the server's Retry-After; everything else fails at once.
 */

export interface RetryPolicy {
  /** Tries in all, the first one included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A Retry-After longer than this fails instead of stalling the command. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 300, maxDelayMs: 10_000, maxRetryAfterMs: 120_000 };

/** An HTTP answer the registry client did not want, with what it takes to decide on a retry. */
export class RegistryHttpError extends FerryError {
  readonly status: number;
  /** Milliseconds the server asked to wait (Retry-After), if it said. */
  readonly retryAfterMs: number | undefined;
  /** Overrides the status-based decision (e.g. a 401 on a streamed body: retry after a token refresh). */
  readonly retryable: boolean | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    status: number,
    options: FerryErrorOptions & { retryAfterMs?: number; retryable?: boolean } = {},
  ) {
    super(code, message, options);
    this.name = 'RegistryHttpError';
    this.status = status;
    this.retryAfterMs = options.retryAfterMs;
    this.retryable = options.retryable;
  }
}

const TRANSIENT_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'PREMATURE_END',
]);

/** Is this failure worth another try? Aborts never are. */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'AbortError') return false;
  if (err instanceof RegistryHttpError) return err.retryable ?? TRANSIENT_STATUS.has(err.status);
  if (err instanceof FerryError) return err.code === 'NETWORK_ERROR';
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && TRANSIENT_CODES.has(code);
}

/** Retry-After as seconds or an HTTP date, in milliseconds from `now`. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** Exponential backoff with jitter, so clients that failed together do not come back together. */
export function backoffDelay(policy: RetryPolicy, failures: number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failures - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/** How long to wait before the next try: the server's Retry-After when it gave one, else backoff. */
export function retryDelay(policy: RetryPolicy, failures: number, err: unknown): number {
  if (err instanceof RegistryHttpError && err.retryAfterMs !== undefined) {
    if (err.retryAfterMs > policy.maxRetryAfterMs) {
      throw new FerryError(err.code, `${err.message}; the registry asks to retry after ${Math.ceil(err.retryAfterMs / 1000)} s`, {
        cause: err,
        hint: 'the registry is rate-limiting or busy; try again later',
      });
    }
    return err.retryAfterMs;
  }
  return backoffDelay(policy, failures);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryContext {
  signal?: AbortSignal;
  /** Which failures are worth another try here; default: the transient ones. */
  retryIf?: (err: unknown) => boolean;
}

/** Run `fn` until it succeeds, fails permanently, or the attempts are used up (then its last error). */
export async function withRetry<T>(policy: RetryPolicy, ctx: RetryContext, fn: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const again = (ctx.retryIf ?? isTransient)(err);
      if (!again || attempt >= policy.attempts || ctx.signal?.aborted) throw err;
      await sleep(retryDelay(policy, attempt, err), ctx.signal);
    }
  }
}
