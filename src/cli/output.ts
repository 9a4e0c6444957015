import { FerryError, UsageError } from '../errors.js';

/** Credentials never reach the terminal: strip user:pass@ from URLs and auth header values. */
export function redact(text: string): string {
  return text
    .replace(/(\w+:\/\/)[^/@\s:]+:[^/@\s]+@/g, '$1***@')
    .replace(/(authorization:\s*)(basic|bearer)\s+\S+/gi, '$1$2 ***');
}

function causeChain(err: unknown): string[] {
  const out: string[] = [];
  let cur: unknown = err instanceof Error ? err.cause : undefined;
  while (cur !== undefined && out.length < 5) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    out.push(msg);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return out;
}

/** Print `ferry: what failed: why`, the causes not already in the message, and a hint; return the exit code. */
export function reportError(err: unknown, write: (line: string) => void): number {
  const debug = process.env.FERRY_DEBUG === '1';
  const message = err instanceof Error ? err.message : String(err);
  write(`ferry: ${redact(message)}`);
  for (const cause of causeChain(err)) {
    if (!message.includes(cause)) write(`  caused by: ${redact(cause)}`);
  }
  if (err instanceof FerryError && err.hint) write(`hint: ${err.hint}`);
  if (debug && err instanceof Error && err.stack) write(redact(err.stack));
  if (err instanceof UsageError) return 2;
  if (!(err instanceof FerryError) && !debug) write('hint: this is a bug in ferry; run again with FERRY_DEBUG=1 and report the stack trace');
  return 1;
}
