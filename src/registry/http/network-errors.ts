import { FerryError, messageOf } from '../../errors.js';
import type { Send } from './request.js';

/**
 * The outermost layer: Node's socket and TLS errors become NETWORK_ERROR naming the operation,
 * with a hint (--ca-file, --insecure-registry); FerryErrors and aborts pass through unchanged.
 */

export interface RegistryHost {
  /** The API host (`registry-1.docker.io`, `127.0.0.1:5000`). */
  host: string;
  /** Whether it is spoken to over TLS. */
  tls: boolean;
}

export function nameNetworkErrors(next: Send, host: RegistryHost): Send {
  return async (ex) => {
    try {
      return await next(ex);
    } catch (err) {
      throw networkError(ex.what, host, err);
    }
  };
}

export function networkError(what: string, registry: RegistryHost, err: unknown): unknown {
  if (err instanceof FerryError || (err instanceof Error && err.name === 'AbortError')) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const { host } = registry;
  const tls = typeof code === 'string' && (code.startsWith('ERR_TLS') || code.includes('CERT') || code.startsWith('DEPTH_ZERO') || code === 'SELF_SIGNED_CERT_IN_CHAIN');
  return new FerryError('NETWORK_ERROR', `${what}: ${tls ? 'TLS certificate not trusted' : 'cannot reach the registry'}: ${messageOf(err)}${code && !messageOf(err).includes(code) ? ` (${code})` : ''}`, {
    cause: err,
    hint: tls
      ? `pass the registry's CA with --ca-file, or use --insecure-registry ${host} for a plain-HTTP registry`
      : `check that ${host} is up and reachable${registry.tls ? `; for a plain-HTTP registry use --insecure-registry ${host}` : ''}`,
  });
}
