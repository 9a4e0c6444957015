import { performance } from 'node:perf_hooks';

/**
 * Where the time of a command goes, for the bench: with FERRY_TIMING=1 every `mark` records the
 * milliseconds since the process started (performance.now(), whose origin is Node's start), and
 * the marks go to stderr as one JSON line at exit: {"ferryTiming":[["main",41.2],...]}.
 * Off by default; then a mark costs one comparison.
 */
const enabled = process.env.FERRY_TIMING === '1';
const marks: Array<[string, number]> = [];

if (enabled) {
  process.once('exit', () => {
    marks.push(['exit', performance.now()]);
    process.stderr.write(`${JSON.stringify({ ferryTiming: marks.map(([name, ms]) => [name, Math.round(ms * 100) / 100]) })}\n`);
  });
}

/** Record that `phase` ended now. */
export function mark(phase: string): void {
  if (enabled) marks.push([phase, performance.now()]);
}
