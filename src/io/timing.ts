/**
 * Where the time of a command goes, for the bench: with FERRY_TIMING=1 every `mark` records the
 * milliseconds since the process started (process.uptime(): node:perf_hooks alone costs a start
 * ~5 ms), and the marks go to stderr as one JSON line at exit: {"ferryTiming":[["main",41.2],...]}.
 * Off by default; then a mark costs one comparison.
 */
const enabled = process.env.FERRY_TIMING === '1';
const marks: Array<[string, number]> = [];
const now = (): number => Math.round(process.uptime() * 1e5) / 100;

if (enabled) {
  process.once('exit', () => {
    marks.push(['exit', now()]);
    process.stderr.write(`${JSON.stringify({ ferryTiming: marks })}\n`);
  });
}

/** Record that `phase` ended now. */
export function mark(phase: string): void {
  if (enabled) marks.push([phase, now()]);
}
