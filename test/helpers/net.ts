import { createServer } from 'node:net';

/** A loopback TCP port that was free a moment ago: bind port 0, read the port, let it go. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('freePort: server has no TCP address');
  return address.port;
}

export interface WaitForHttpOptions {
  timeoutMs?: number;
  /** Checked between tries: a server that died will never answer, so stop waiting with its reason. */
  failed?: () => string | undefined;
}

/** Poll `url` until it gives any HTTP answer (401 counts: the server is up). */
export async function waitForHttp(url: string, options: WaitForHttpOptions = {}): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let lastError: unknown;
  for (;;) {
    const reason = options.failed?.();
    if (reason !== undefined) throw new Error(`waiting for ${url}: ${reason}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      return;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`waiting for ${url}: no answer in time`, { cause: lastError });
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
