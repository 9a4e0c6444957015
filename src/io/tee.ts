import { PassThrough, type Readable } from 'node:stream';

/** Two readers of one stream, with backpressure from both (pipe waits for the slower); an error reaches both. */
export function tee(source: Readable): [Readable, Readable] {
  const a = new PassThrough();
  const b = new PassThrough();
  source.pipe(a);
  source.pipe(b);
  // Readers see a side's failure through pipeline()/finished(), which read its errored state at
  // 'close' and (Node 20) add no 'error' listener; a side whose reader has stopped (it failed
  // first, or stopped at the end of a tar) has none at all. Without this listener the error the
  // source gives each side would also surface as an uncaught exception.
  for (const side of [a, b]) side.on('error', () => undefined);
  source.on('error', (err) => {
    a.destroy(err);
    b.destroy(err);
  });
  return [a, b];
}
