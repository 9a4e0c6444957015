import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { TarReader, type TarEntry } from '../io/tar-reader.js';

/**
 * The store's policy over io's tar reader, for layer tars: the strict end (the stream is read
 * to its end, so the diffId covers every byte, and nothing but zeros may follow the end marker),
 * INVALID_LAYER for a malformed archive, and only what a layer may hold: files, directories,
 * links, devices and FIFOs. Sparse and other GNU/vendor entry types are refused, not guessed at.
 */

function invalid(what: string, why: string): FerryError {
  return new FerryError('INVALID_LAYER', `${what}: invalid tar: ${why}`, {
    hint: 'the layer is damaged or was not written by a tar tool; fetch or export the image again',
  });
}

export class LayerTarReader extends TarReader {
  /** `skeleton`: see TarReaderOptions (the unpacker records a tar-split with it). */
  constructor(stream: Readable, what: string, skeleton?: (bytes: Buffer) => void) {
    super(stream, { what, end: 'strict', error: (problem) => invalid(what, problem.why), ...(skeleton === undefined ? {} : { skeleton }) });
  }

  override async next(): Promise<TarEntry | undefined> {
    const entry = await super.next();
    if (entry === undefined) return undefined;
    if (entry.type === 'other') {
      throw new FerryError('UNSUPPORTED', `${this.what}: tar entry "${entry.name.toString('utf8')}" has unsupported type '${entry.typeflag}'`, {
        hint: 'layers may hold files, directories, links, devices and FIFOs; sparse or multi-volume GNU entries are not supported',
      });
    }
    for (const key of entry.pax.keys()) {
      if (key.startsWith('GNU.sparse.')) throw new FerryError('UNSUPPORTED', `${this.what}: sparse file entries (${key}) are not supported`);
    }
    return entry;
  }
}
