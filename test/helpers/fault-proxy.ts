import { Agent, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';

/**
 * An HTTP proxy in front of a registry that injects faults for retry tests. It forwards every
 * end-to-end header both ways (Authorization, Range, WWW-Authenticate, Location, Host, ...) and
 * streams bodies both ways; only the connection-level headers (Connection, Keep-Alive,
 * Transfer-Encoding) are left to each hop, since the proxy re-frames each message.
 * Host is forwarded as the client sent it, so the registry builds upload Locations that point back
 * at the proxy and every later request of an upload goes through it too.
 */
export type Fault =
  | { kind: 'drop'; match: RegExp; afterBytes: number; times?: number }     // send headers + N body bytes then destroy the socket
  | { kind: 'status'; match: RegExp; status: number; retryAfter?: number; times?: number } // answer with this status (e.g. 500, 429 + Retry-After seconds) instead of forwarding
  | { kind: 'flip'; match: RegExp; offset: number; times?: number }         // forward, but flip one byte of the body at offset
  | { kind: 'cut'; match: RegExp; afterBytes: number; times?: number };    // forward N bytes of the *request* body, then cut both connections (a dropped upload)

export interface ProxiedRequest {
  method: string;
  /** The request target as sent: path plus query string. */
  path: string;
  /** The status the client got (0 while the answer is still pending or when the upstream failed). */
  status: number;
  range: string | undefined;
  /** The fault applied to this request, if any. */
  fault?: Fault['kind'];
}

export interface FaultProxy {
  host: string;                       // '127.0.0.1:PORT'
  setFaults(faults: Fault[]): void;   // `match` is tested against `${method} ${path}`; times defaults to 1
  requests: ProxiedRequest[];         // { method, path, status, range, fault? } in arrival order
  /** The faults set with setFaults that still have uses left (a test can check all were hit). */
  pendingFaults(): Fault[];
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade']);

/** rawHeaders (name, value, name, value, ...) without the connection-level ones. */
function endToEnd(rawHeaders: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  return out;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const [targetHost, targetPortText] = splitHost(target);
  const targetPort = Number.parseInt(targetPortText, 10);
  const agent = new Agent({ keepAlive: true });
  let faults: Array<{ fault: Fault; left: number }> = [];
  const requests: ProxiedRequest[] = [];

  function takeFault(line: string): Fault | undefined {
    for (const entry of faults) {
      if (entry.left > 0 && entry.fault.match.test(line)) {
        entry.left--;
        return entry.fault;
      }
    }
    return undefined;
  }

  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const record: ProxiedRequest = { method, path, status: 0, range: req.headers.range };
    requests.push(record);
    const fault = takeFault(`${method} ${path}`);
    if (fault) record.fault = fault.kind;
    if (fault?.kind === 'status') {
      answerStatus(req, res, record, fault);
      return;
    }
    if (fault?.kind === 'cut') {
      cutUpload(req, res, fault.afterBytes);
      return;
    }
    forward(req, res, record, fault);
  });
  // Keep-alive connections from clients must not keep stop() waiting.
  server.keepAliveTimeout = 5_000;

  function forward(req: IncomingMessage, res: ServerResponse, record: ProxiedRequest, fault: Fault | undefined): void {
    const upstream = httpRequest({
      host: targetHost,
      port: targetPort,
      method: req.method,
      path: req.url,
      headers: endToEnd(req.rawHeaders),
      agent,
    });
    upstream.on('response', (upstreamRes) => relay(upstreamRes, res, record, fault));
    upstream.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`fault proxy: upstream ${target} failed: ${err.message}`);
    });
    // A client that goes away mid-request (or mid-response) takes the upstream request with it.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  /** The registry gets the first `afterBytes` of the body, then both connections break mid-upload. */
  function cutUpload(req: IncomingMessage, res: ServerResponse, afterBytes: number): void {
    const upstream = httpRequest({ host: targetHost, port: targetPort, method: req.method, path: req.url, headers: endToEnd(req.rawHeaders) });
    upstream.on('error', () => undefined); // destroyed on purpose below
    upstream.on('response', (r) => r.resume());
    let sent = 0;
    let cut = false;
    const cutNow = (): void => {
      if (cut) return;
      cut = true;
      upstream.destroy();
      req.socket.destroy();
      res.destroy();
    };
    req.on('data', (chunk: Buffer) => {
      if (cut) return;
      const room = afterBytes - sent;
      if (chunk.length < room) {
        sent += chunk.length;
        upstream.write(chunk);
        return;
      }
      upstream.write(chunk.subarray(0, room), () => setTimeout(cutNow, 50));
      sent = afterBytes;
    });
    req.on('end', () => setTimeout(cutNow, 50));
  }

  function relay(upstreamRes: IncomingMessage, res: ServerResponse, record: ProxiedRequest, fault: Fault | undefined): void {
    const status = upstreamRes.statusCode ?? 502;
    record.status = status;
    res.writeHead(status, upstreamRes.statusMessage, endToEnd(upstreamRes.rawHeaders));
    if (fault?.kind === 'drop') {
      res.flushHeaders();
      let sent = 0;
      let cut = false;
      const cutNow = (): void => {
        if (cut) return;
        cut = true;
        upstreamRes.destroy();
        // end() sends what is queued, then FIN: the client sees the body stop short of its length.
        const socket = res.socket;
        socket?.end();
        setTimeout(() => socket?.destroy(), 200).unref();
      };
      if (fault.afterBytes <= 0) {
        cutNow();
        return;
      }
      upstreamRes.on('data', (chunk: Buffer) => {
        if (cut) return;
        const room = fault.afterBytes - sent;
        if (chunk.length < room) {
          sent += chunk.length;
          res.write(chunk);
          return;
        }
        res.write(chunk.subarray(0, room));
        sent += room;
        cutNow();
      });
      // A body shorter than afterBytes is still cut off at its end, never finished cleanly.
      upstreamRes.on('end', cutNow);
      return;
    }
    if (fault?.kind === 'flip') {
      let position = 0;
      upstreamRes.on('data', (chunk: Buffer) => {
        const at = fault.offset - position;
        position += chunk.length;
        if (at >= 0 && at < chunk.length) {
          const copy = Buffer.from(chunk);
          copy[at] = copy[at]! ^ 0xff;
          res.write(copy);
        } else {
          res.write(chunk);
        }
      });
      upstreamRes.on('end', () => res.end());
      upstreamRes.on('error', () => res.destroy());
      return;
    }
    upstreamRes.pipe(res);
    upstreamRes.on('error', () => res.destroy());
  }

  function answerStatus(
    req: IncomingMessage,
    res: ServerResponse,
    record: ProxiedRequest,
    fault: Extract<Fault, { kind: 'status' }>,
  ): void {
    // Drain any upload body so the client can read the answer.
    req.resume();
    const code = fault.status === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE';
    const body = JSON.stringify({ errors: [{ code, message: `fault proxy: injected ${fault.status}` }] });
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'docker-distribution-api-version': 'registry/2.0',
    };
    if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
    record.status = fault.status;
    res.writeHead(fault.status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('fault proxy has no TCP address');

  return {
    host: `127.0.0.1:${address.port}`,
    requests,
    setFaults(list) {
      faults = list.map((fault) => ({ fault, left: fault.times ?? 1 }));
    },
    pendingFaults() {
      return faults.filter((entry) => entry.left > 0).map((entry) => entry.fault);
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}

function splitHost(hostPort: string): [string, string] {
  const colon = hostPort.lastIndexOf(':');
  if (colon < 0) return [hostPort, '80'];
  return [hostPort.slice(0, colon), hostPort.slice(colon + 1)];
}
