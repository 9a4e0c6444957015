import { dockerfileError, type Instruction } from './dockerfile.js';

/**
 * Per-instruction argument rules that need no build state: allowed flags, durations, signals of
 * HEALTHCHECK. Errors name the Dockerfile and line.
 */
const ALLOWED_FLAGS: Record<string, readonly string[]> = {
  FROM: ['platform'],
  COPY: ['from', 'chown', 'chmod', 'link', 'exclude', 'parents'],
  ADD: ['chown', 'chmod', 'link', 'keep-git-dir', 'checksum', 'exclude'],
  RUN: ['network', 'mount', 'security'],
  HEALTHCHECK: ['interval', 'timeout', 'start-period', 'start-interval', 'retries'],
};

/** `--name=value` flags as a map; unknown flags are refused, naming the line. */
export function instructionFlags(path: string, ins: Instruction): Map<string, string> {
  const out = new Map<string, string>();
  const allowed = ALLOWED_FLAGS[ins.keyword] ?? [];
  for (const f of ins.flags) {
    const m = /^--([^=]+)(?:=([\s\S]*))?$/.exec(f)!;
    const name = m[1]!;
    if (!allowed.includes(name)) throw dockerfileError(path, ins.line, `${ins.keyword}: unknown flag --${name}`, allowed.length > 0 ? `${ins.keyword} takes ${allowed.map((a) => `--${a}`).join(', ')}` : `${ins.keyword} takes no flags`);
    out.set(name, m[2] ?? 'true');
  }
  return out;
}

const UNITS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** A Go duration ("30s", "1m30s", "500ms") in nanoseconds. */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
  // µ written as \u00b5: the packed executable's script must be ASCII (scripts/pack/pack.js).
  const re = /(\d+(?:\.\d+)?)(ns|us|\u00b5s|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === text.length && text !== '' ? Math.round(total) : undefined;
}
