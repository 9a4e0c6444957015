import type { Readable } from 'node:stream';
import type { HttpResponse, Transport } from '../transport.js';

/**
 * The registry client's layers all have one shape, `Send`: take an exchange, give the response.
 * Each layer wraps the one below it (base request <- redirects <- authenticate <- check status
 * <- retry <- network errors) and reads only the fields of `Exchange` that concern it.
 */

export interface Exchange {
  method: string;
  /** Absolute: the API origin's `/v2/...` or an upload location (possibly on another host). */
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer can be sent again; a stream only once (it is spent by the first try). */
  body?: Buffer | Readable;
  signal?: AbortSignal;
  /** Names the operation in errors: "get manifest 127.0.0.1:5000/ns/app:1". */
  what: string;
  /** Token scopes the request needs (authenticate). */
  scopes?: readonly string[];
  /** Statuses that are answers, not errors (check status); undefined: every status is an answer. */
  ok?: readonly number[];
  /** False: never sent again, even with a replayable body (retry). */
  retry?: boolean;
  /** The repository, for hints in errors. */
  repository?: string;
}

export type Send = (ex: Exchange) => Promise<HttpResponse>;

/** The base layer: one HTTP exchange over the transport (plain HTTP or TLS, CA set, idle timeout, signal). */
export function baseRequest(transport: Transport): Send {
  return (ex) =>
    transport.request({
      method: ex.method,
      url: ex.url,
      ...(ex.headers !== undefined ? { headers: ex.headers } : {}),
      ...(ex.body !== undefined ? { body: ex.body } : {}),
      ...(ex.signal !== undefined ? { signal: ex.signal } : {}),
    });
}
