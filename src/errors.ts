/**
 * The one error family of ferry. Every failure carries a stable `code`, a message that reads
 * "what failed: why" naming the image, digest, volume or path, and an optional `hint` saying
 * what the user can do. The CLI prints message, cause chain and hint; never a stack trace.
 */
export type ErrorCode =
  | 'USAGE'
  | 'NOT_IMPLEMENTED'
  | 'INVALID_REFERENCE'
  | 'INVALID_DIGEST'
  | 'INVALID_MANIFEST'
  | 'UNSUPPORTED'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'REGISTRY_ERROR'
  | 'NETWORK_ERROR'
  | 'PLATFORM_NOT_FOUND'
  | 'BUNDLE_INVALID'
  | 'SIGNATURE_INVALID'
  | 'UNSAFE_PATH'
  | 'INVALID_LAYER'
  | 'STORE_ERROR'
  | 'IN_USE'
  | 'NO_SPACE'
  | 'RUNTIME_ERROR'
  | 'IO_ERROR'
  | 'DOCKERFILE_INVALID'
  | 'BUILD_FAILED';

export interface FerryErrorOptions {
  hint?: string;
  cause?: unknown;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: FerryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FerryError';
    this.code = code;
    this.hint = options.hint;
  }
}

/** A usage error: the CLI exits 2 for these. */
export class UsageError extends FerryError {
  constructor(message: string, options: FerryErrorOptions = {}) {
    super('USAGE', message, options);
    this.name = 'UsageError';
  }
}

export function isFerryError(err: unknown, code?: ErrorCode): err is FerryError {
  return err instanceof FerryError && (code === undefined || err.code === code);
}

/** The message of any thrown value, for "what failed: why" chains. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
