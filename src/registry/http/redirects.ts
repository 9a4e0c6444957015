import { FerryError } from '../../errors.js';
import { discard, headerValue } from '../transport.js';
import type { Send } from './request.js';

/**
 * The redirect layer: GET and HEAD follow 301/302/303/307/308 (registries send blob GETs to
 * storage elsewhere). Authorization goes only to the first request's origin: a hop to another
 * host (a signed storage URL) never sees the registry's token or password.
 */

export const MAX_REDIRECTS = 5;
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

export interface RedirectOptions {
  maxRedirects?: number;
}

export function followRedirects(next: Send, options: RedirectOptions = {}): Send {
  const max = options.maxRedirects ?? MAX_REDIRECTS;
  return async (ex) => {
    // Other methods carry bodies that a redirect would need again: their 3xx is the answer.
    if (ex.method !== 'GET' && ex.method !== 'HEAD') return next(ex);
    const origin = ex.url.origin;
    let url = ex.url;
    for (let hop = 0; ; hop++) {
      const headers = url.origin === origin ? ex.headers : withoutAuthorization(ex.headers);
      const res = await next({ ...ex, url, ...(headers !== undefined ? { headers } : {}) });
      const location = headerValue(res.headers, 'location');
      if (!REDIRECT_STATUS.has(res.status) || location === undefined) return res;
      discard(res);
      if (hop >= max) throw new FerryError('REGISTRY_ERROR', `${ex.what}: more than ${max} redirects`);
      url = new URL(location, url);
    }
  };
}

function withoutAuthorization(headers: Record<string, string> | undefined): Record<string, string> | undefined {
  if (headers === undefined) return undefined;
  return Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== 'authorization'));
}
