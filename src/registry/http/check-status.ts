import { messageOf, type ErrorCode } from '../../errors.js';
import { parseChallenges } from '../auth.js';
import { RegistryHttpError, parseRetryAfter } from '../retry.js';
import { discard, headerValue, readBody, type HttpResponse } from '../transport.js';
import type { Exchange, Send } from './request.js';

/**
 * The status layer: a status the exchange does not list in `ok` becomes a RegistryHttpError
 * naming the operation, the status and the registry's own error text, with a hint. The retry
 * layer above decides on those errors (429, 5xx: temporary; the rest: final).
 */

export type DescribeFailure = (ex: Exchange, res: HttpResponse) => Promise<Error>;

export function checkStatus(next: Send, describe: DescribeFailure): Send {
  return async (ex) => {
    const res = await next(ex);
    if (ex.ok === undefined || ex.ok.includes(res.status)) return res;
    throw await describe(ex, res);
  };
}

const MAX_ERROR_BODY = 64 * 1024;

export interface RegistryFailureContext {
  /** The registry as the user names it, for `ferry login` hints. */
  registry: string;
  /** Whether credentials were offered: a 401 then means "refused", not "needed". */
  usedCredentials: () => boolean;
}

/** How a registry's unwanted answers read: 401 needed/refused/denied scope, 403, 404, 429, the rest. */
export function registryFailure(context: RegistryFailureContext): DescribeFailure {
  const { registry } = context;
  return async (ex, res) => {
    let detail = '';
    if (ex.method !== 'HEAD') {
      try {
        detail = registryErrorDetail(await readBody(res, MAX_ERROR_BODY, ex.what));
      } catch (err) {
        detail = `(error body unreadable: ${messageOf(err)})`;
      }
    } else discard(res);
    const status = res.status;
    const suffix = detail ? `: ${detail}` : '';
    const retryAfterMs = parseRetryAfter(headerValue(res.headers, 'retry-after'));
    const extra = retryAfterMs === undefined ? {} : { retryAfterMs };
    const make = (code: ErrorCode, why: string, hint?: string): RegistryHttpError =>
      new RegistryHttpError(code, `${ex.what}: ${why} (HTTP ${status}${suffix})`, status, { ...extra, ...(hint ? { hint } : {}) });
    switch (status) {
      case 401: {
        const used = context.usedCredentials();
        const challenge = parseChallenges(headerValue(res.headers, 'www-authenticate') ?? '')[0];
        if (used && challenge?.params.error === 'insufficient_scope') {
          // Distribution lists the actions in map order: sort them so the message reads the same each time.
          const wanted = (challenge.params.scope ?? (ex.scopes ?? []).join(' '))
            .split(' ')
            .map((scope) => scope.replace(/:([a-z*,]+)$/, (_m, actions: string) => `:${actions.split(',').sort().join(',')}`))
            .join(' ');
          return make('DENIED', `access denied: the user is not granted ${wanted}`, `log in as a user with that permission: 'ferry login ${registry}'`);
        }
        return used
          ? make('UNAUTHORIZED', 'the registry refused the credentials', `check the user name and password; run 'ferry login ${registry}' again`)
          : make('UNAUTHORIZED', 'authentication is needed', `run 'ferry login ${registry}'`);
      }
      case 403:
        return make('DENIED', 'access denied', `the user lacks permission on ${ex.repository ?? registry}; check with the registry's administrator`);
      case 404:
        return make('NOT_FOUND', 'not found', 'check the repository name and tag');
      case 429:
        return make('REGISTRY_ERROR', 'too many requests', 'the registry is rate-limiting; try again later');
      default:
        return make('REGISTRY_ERROR', `the registry answered ${status}`);
    }
  };
}

/** `CODE: message` of a registry's error body (`{"errors":[{"code","message"}]}`), else a short text. */
export function registryErrorDetail(body: Buffer): string {
  const text = body.toString('utf8').trim();
  if (text === '') return '';
  try {
    const v = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (Array.isArray(v.errors) && v.errors.length > 0) {
      return v.errors
        .slice(0, 3)
        .map((e) => [typeof e.code === 'string' ? e.code : '', typeof e.message === 'string' ? e.message : ''].filter((x) => x !== '').join(' '))
        .join('; ');
    }
  } catch {
    // not JSON: fall through to the plain text
  }
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}
