import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { FerryError } from '../errors.js';
import { Digester, digestAlgorithm, type Digest, type DigestAlgorithm } from '../oci/digest.js';

export interface VerifyOptions {
  /** Expected total size; a stream that runs past it fails at once. */
  size?: number;
  /** What these bytes are, for errors: "blob sha256:... of docker.io/library/redis". */
  what?: string;
}

/**
 * A pass-through that hashes what flows and fails the stream at its end when size or digest do
 * not match: digests are checked where bytes enter, while streaming, never trusted from names.
 */
export class VerifyDigest extends Transform {
  readonly expected: Digest;
  private readonly digester: Digester;
  private readonly size: number | undefined;
  private readonly what: string;

  constructor(expected: Digest, options: VerifyOptions = {}) {
    super();
    this.expected = expected;
    this.digester = new Digester(digestAlgorithm(expected));
    this.size = options.size;
    this.what = options.what ?? `blob ${expected}`;
  }

  get bytes(): number {
    return this.digester.size;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.digester.update(chunk);
    if (this.size !== undefined && this.digester.size > this.size) {
      done(new FerryError('SIZE_MISMATCH', `${this.what}: more than the expected ${this.size} bytes`));
      return;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.size !== undefined && this.digester.size !== this.size) {
      done(new FerryError('SIZE_MISMATCH', `${this.what}: got ${this.digester.size} bytes, expected ${this.size}`));
      return;
    }
    const actual = this.digester.digest();
    if (actual !== this.expected) {
      done(new FerryError('DIGEST_MISMATCH', `${this.what}: digest mismatch: content hashes to ${actual}`, {
        hint: 'the data was corrupted in transit or at rest; fetch or copy it again',
      }));
      return;
    }
    done();
  }
}

/** A pass-through that only measures: digest and size of what flowed, read after the end. */
export class MeasureDigest extends Transform {
  private readonly digester: Digester;
  private result: Digest | undefined;

  constructor(algorithm: DigestAlgorithm = 'sha256') {
    super();
    this.digester = new Digester(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.digester.update(chunk);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    this.result = this.digester.digest();
    done();
  }

  get size(): number {
    return this.digester.size;
  }

  /** Available once the stream has ended. */
  get digest(): Digest {
    if (this.result === undefined) throw new Error('MeasureDigest: digest read before the stream ended');
    return this.result;
  }
}

/** Streams whose own code checks them, and the digest each one is checked against. */
const verifiedStreams = new WeakMap<Readable, Digest>();

/**
 * Called by the code that verifies `stream` (never by one that merely received it): the stream
 * fails at its end, before it ends, unless its bytes hash to `digest`. A consumer that would
 * hash the same bytes against the same digest (the store's unpack) can skip its own hash then;
 * any other stream it hashes itself.
 */
export function markVerified<T extends Readable>(stream: T, digest: Digest): T {
  verifiedStreams.set(stream, digest);
  return stream;
}

/** The digest `stream` checks itself against (see markVerified), or undefined. */
export function verifiedDigest(stream: Readable): Digest | undefined {
  return verifiedStreams.get(stream);
}
