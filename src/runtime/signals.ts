import { constants } from 'node:os';
import { UsageError } from '../errors.js';

export interface Signal {
  number: number;
  /** SIGTERM, SIGKILL, ... */
  name: string;
}

const BY_NAME = constants.signals as Record<string, number>;

/** "SIGTERM", "TERM", "term" or "15" (docker's StopSignal and `kill -s` forms). */
export function parseSignal(text: string): Signal {
  const t = text.trim();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    const name = Object.keys(BY_NAME).find((k) => BY_NAME[k] === n);
    // Real-time signals have no name in Node's table but are valid to send.
    if (name !== undefined) return { number: n, name };
    if (n > 0 && n <= 64) return { number: n, name: String(n) };
  } else {
    const upper = t.toUpperCase();
    const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
    const n = BY_NAME[name];
    if (n !== undefined) return { number: n, name };
  }
  throw new UsageError(`unknown signal "${text}"`, { hint: 'use a name such as SIGTERM, TERM, KILL or a number such as 15' });
}

/** The name Node's process.kill takes, or the number for signals Node has no name for. */
export function killArgument(signal: Signal): NodeJS.Signals | number {
  return signal.name.startsWith('SIG') ? (signal.name as NodeJS.Signals) : signal.number;
}
