import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { ProgressListener } from '../oci/progress-event.js';
import { chain } from './layer-forms.js';

/** Counts bytes as they pass, for progress lines. */
class Counter extends Transform {
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.onBytes(chunk.length);
    done(null, chunk);
  }
}

/**
 * Progress for one blob going to one place: every `open` (a retry too) starts the count again,
 * and `settle` reports how it ended (present and mounted blobs as skipped).
 */
export class CopyProgress {
  private sent = 0;
  private started = false;

  constructor(
    private readonly listener: ProgressListener | undefined,
    private readonly id: string,
    private readonly label: string,
    private readonly total: number | undefined,
  ) {}

  wrap(open: (signal?: AbortSignal) => Promise<Readable>): (signal?: AbortSignal) => Promise<Readable> {
    return async (signal) => {
      const stream = await open(signal);
      this.sent = 0;
      this.started = true;
      this.listener?.({ kind: 'start', id: this.id, label: this.label, ...(this.total !== undefined ? { total: this.total } : {}) });
      return chain(
        stream,
        new Counter((n) => {
          this.sent += n;
          this.listener?.({ kind: 'advance', id: this.id, bytes: n });
        }),
      );
    };
  }

  settle(result: 'exists' | 'mounted' | 'uploaded', size: number): void {
    if (result !== 'uploaded') {
      if (!this.started) this.listener?.({ kind: 'start', id: this.id, label: this.label });
      this.listener?.({ kind: 'done', id: this.id, label: `${this.label} (${result === 'mounted' ? 'mounted' : 'present'})`, bytes: size, skipped: true });
      return;
    }
    this.listener?.({ kind: 'done', id: this.id, label: this.label, bytes: this.sent || size });
  }
}
