import { PassThrough, type Readable } from 'node:stream';

/** Two readers of one stream, with backpressure from both (pipe waits for the slower); an error reaches both. */
export function tee(source: Readable): [Readable, Readable] {
  const a = new PassThrough();
  const b = new PassThrough();
  source.pipe(a);
  source.pipe(b);
  source.on('error', (err) => {
    a.destroy(err);
    b.destroy(err);
  });
  return [a, b];
}
