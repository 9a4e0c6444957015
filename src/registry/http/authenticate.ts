import { RegistryHttpError } from '../retry.js';
import type { Authenticator } from '../auth.js';
import { discard, headerValue } from '../transport.js';
import type { Exchange, Send } from './request.js';

/**
 * The auth layer: send what the authenticator knows for the exchange's scopes (Basic, or a
 * Bearer token cached per scope); on a 401 learn the challenge, fetch a fresh token (or take the
 * Basic credentials) and send once more. Authorization goes only to the registry's own origin.
 * A 401 that stays is the answer: the status layer above names it.
 */

export interface AuthenticateOptions {
  /** One registry's authentication state (auth.ts). */
  authenticator: Authenticator;
  /** The registry's API origin (`https://host`): requests elsewhere (upload locations on storage) go without. */
  origin: string;
}

export function authenticate(next: Send, options: AuthenticateOptions): Send {
  const { authenticator, origin } = options;
  const authorized = (ex: Exchange, authorization: string | undefined): Exchange =>
    authorization !== undefined && ex.url.origin === origin ? { ...ex, headers: { ...ex.headers, authorization } } : ex;
  return async (ex) => {
    const scopes = ex.scopes ?? [];
    const res = await next(authorized(ex, await authenticator.header(scopes)));
    if (res.status !== 401) return res;
    const fresh = await authenticator.refresh(headerValue(res.headers, 'www-authenticate'), scopes, ex.signal);
    if (fresh === undefined) return res;
    discard(res);
    if (ex.body !== undefined && !Buffer.isBuffer(ex.body)) {
      // A streamed body is spent: the caller starts the upload again with the new token.
      throw new RegistryHttpError('UNAUTHORIZED', `${ex.what}: authentication expired during the upload`, 401, { retryable: true });
    }
    return next(authorized(ex, fresh));
  };
}
