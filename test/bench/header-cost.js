// The bundle header alone: how much peak memory ferry's one JSON document costs to parse (import)
// or to serialize as export's writer does (its pieces, hashed, as they would stream), in a process of its own. Run by the scale section with --expose-gc:
//   node --expose-gc header-cost.js parse|serialize FERRY-BUNDLE.JSON
// prints the growth of the peak RSS (VmHWM) over the RSS just before, in bytes. Linux only: the
// peak is reset through /proc/self/clear_refs so that reading the file does not count.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [mode, file] = process.argv.slice(2);
if ((mode !== 'parse' && mode !== 'serialize') || file === undefined) {
  process.stderr.write('usage: node --expose-gc header-cost.js parse|serialize FERRY-BUNDLE.JSON\n');
  process.exit(2);
}
const gc = globalThis.gc;
if (typeof gc !== 'function') throw new Error('header-cost.js: run node with --expose-gc');
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { parseHeader, headerPieces } = await import(join(repo, 'dist', 'bundle', 'format.js'));
const { createHash } = await import('node:crypto');

const status = (field) => Number(/\d+/.exec(readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(`${field}:`)) ?? '')?.[0] ?? NaN) * 1024;
/** RSS now, with the peak reset to it: what follows is measured from here. */
const resetPeak = () => {
  gc();
  writeFileSync('/proc/self/clear_refs', '5');
  return status('VmRSS');
};

let bytes = readFileSync(file);
let kept;
let before;
if (mode === 'parse') {
  before = resetPeak();
  kept = parseHeader(bytes, file);
} else {
  const header = parseHeader(bytes, file);
  bytes = undefined;
  before = resetPeak();
  // The writer's two passes: one for the size and digest, one into the stream.
  const digests = [0, 1].map(() => {
    const hash = createHash('sha256');
    for (const piece of headerPieces(header)) hash.update(piece);
    return hash.digest('hex');
  });
  kept = [header, digests];
}
const peak = status('VmHWM');
process.stdout.write(`${peak - before}\n`);
if (kept === undefined) throw new Error('unreachable');
