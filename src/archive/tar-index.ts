import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { PassThrough, Readable, addAbortSignal } from 'node:stream';
import { FerryError, messageOf } from '../errors.js';
import type { OpenOptions } from '../oci/image.js';
import type { TarEntryType as TarReaderEntryType } from '../io/tar-format.js';
import { TarFileSource, TarReader, type TarProblem } from '../io/tar-reader.js';

/**
 * Random access into an uncompressed tar file without extracting it: walk the headers once
 * (entry name -> offset and size), then open entries as byte ranges of the file. A docker-archive
 * can be many GB; this streams every layer straight from the archive and buffers only headers.
 */

/** Symlink chains longer than this are loops (Linux stops at 40 too). */
const MAX_LINK_HOPS = 40;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  /** Normalised path inside the archive: no leading `./` or `/`, no trailing `/`. */
  readonly name: string;
  readonly type: TarEntryType;
  /** Offset of the entry's data in the tar file. */
  readonly offset: number;
  readonly size: number;
  /** Normalised target of a link (symlinks: resolved against the link's directory). */
  readonly target?: string;
}

export interface TarIndex {
  /** The tar file and how to name it in errors ("docker-archive /x/app.tar"). */
  readonly file: string;
  readonly what: string;
  readonly entries: ReadonlyMap<string, TarEntry>;
  /** The regular file at `name`, following links inside the archive; undefined when absent. */
  lookup(name: string): TarEntry | undefined;
  /** The entry's bytes as a stream of the file's byte range. */
  open(entry: TarEntry, options?: OpenOptions): Readable;
  /** Read a small entry whole, refusing one larger than `max` bytes. */
  read(entry: TarEntry, max: number): Promise<Buffer>;
  /** The first bytes of an entry (magic numbers). */
  head(entry: TarEntry, length: number): Promise<Buffer>;
}

function unsafe(what: string, name: string, why: string): FerryError {
  return new FerryError('UNSAFE_PATH', `${what}: entry "${name}" ${why}`, {
    hint: 'the archive is damaged or crafted to escape its directory; do not use it',
  });
}

/**
 * Normalise an archive path; throws UNSAFE_PATH for absolute paths and paths that climb out
 * with `..`. Returns '' for the archive root itself (`.` or `./`).
 */
export function normalizeEntryName(name: string, what: string): string {
  if (name.includes('\0')) throw unsafe(what, name.replace(/\0/g, '\\0'), 'contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(what, name, 'is an absolute path');
  const n = posix.normalize(name).replace(/\/+$/, '');
  if (n === '..' || n.startsWith('../')) throw unsafe(what, name, 'leaves the archive ("..")');
  return n === '.' ? '' : n;
}

async function readAt(handle: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
}

const ENTRY_TYPES: Record<TarReaderEntryType, TarEntryType> = {
  file: 'file',
  dir: 'directory',
  symlink: 'symlink',
  hardlink: 'hardlink',
  char: 'other',
  block: 'other',
  fifo: 'other',
  other: 'other',
};

function truncatedHeader(what: string, at: number, fileSize: number): FerryError {
  return new FerryError('INVALID_MANIFEST', `${what}: truncated tar (header at byte ${at} runs past the end, ${fileSize} bytes)`, {
    hint: 'the file was cut short while copying; copy it again',
  });
}

/** The archive's errors for problems io's tar reader finds. */
function archiveTarError(what: string, fileSize: number): (problem: TarProblem) => FerryError {
  return (problem) => {
    switch (problem.kind) {
      case 'truncated':
        if (problem.part === 'header') return truncatedHeader(what, problem.header, fileSize);
        return new FerryError('INVALID_MANIFEST', `${what}: truncated tar (entry at byte ${problem.header} needs ${problem.size} bytes, the file ends first)`, {
          hint: 'the file was cut short while copying; copy it again',
        });
      case 'checksum':
        return problem.header > 0
          ? new FerryError('INVALID_MANIFEST', `${what}: bad tar header checksum at byte ${problem.header}`, { hint: 'the archive is corrupted; copy it again' })
          : new FerryError('INVALID_MANIFEST', `${what}: not a tar archive`, {
              hint: 'expected the output of docker save, podman save or skopeo copy (tar, tar.gz or tar.zst)',
            });
      case 'limit':
        return new FerryError('INVALID_MANIFEST', `${what}: tar metadata entry at byte ${problem.header} is ${problem.size} bytes`);
      default:
        return new FerryError('INVALID_MANIFEST', `${what}: bad tar header at byte ${problem.header}: ${problem.why}`, { hint: 'the archive is corrupted; copy it again' });
    }
  };
}

/** Walk the headers of the tar at `file` and index its entries. `what` names the archive in errors. */
export async function indexTar(file: string, what: string): Promise<TarIndex> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR';
    throw new FerryError(code, `${what}: cannot open: ${messageOf(err)}`, { cause: err });
  }
  const entries = new Map<string, TarEntry>();
  try {
    const fileSize = (await handle.stat()).size;
    const reader = new TarReader(new TarFileSource(handle, fileSize), { what, end: 'lenient', error: archiveTarError(what, fileSize) });
    for (let e = await reader.next(); e !== undefined; e = await reader.next()) {
      const rawName = e.name.toString('utf8');
      const rawLink = e.linkname.toString('utf8');
      const name = normalizeEntryName(rawName, what);
      if (name === '') continue;
      const type = ENTRY_TYPES[e.type];
      let target: string | undefined;
      if (type === 'symlink') {
        if (rawLink.startsWith('/')) throw unsafe(what, name, `is a symlink to the absolute path "${rawLink}"`);
        const t = posix.normalize(posix.join(posix.dirname(name), rawLink));
        if (t === '..' || t.startsWith('../')) throw unsafe(what, name, `is a symlink that leaves the archive ("${rawLink}")`);
        target = t === '.' ? '' : t;
      } else if (type === 'hardlink') {
        target = normalizeEntryName(rawLink, what);
      }
      // Entries with data only for files; links and directories carry none that matters.
      const entry: TarEntry = target === undefined ? { name, type, offset: e.bodyOffset, size: e.size } : { name, type, offset: e.bodyOffset, size: e.size, target };
      entries.set(name, entry);
    }
    // Some writers omit the end-of-archive blocks (a tar that stops between entries is complete), but an empty file is no tar.
    if (reader.offset === 0) throw truncatedHeader(what, 0, fileSize);
  } finally {
    await handle.close();
  }
  return makeIndex(file, what, entries);
}

function makeIndex(file: string, what: string, entries: Map<string, TarEntry>): TarIndex {
  const lookup = (name: string): TarEntry | undefined => {
    let current = normalizeEntryName(name, what);
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const entry = entries.get(current);
      if (entry === undefined) return undefined;
      if (entry.type === 'file') return entry;
      if ((entry.type === 'symlink' || entry.type === 'hardlink') && entry.target !== undefined) {
        current = entry.target;
        continue;
      }
      throw new FerryError('INVALID_MANIFEST', `${what}: entry "${entry.name}" is a ${entry.type}, not a file`);
    }
    throw new FerryError('INVALID_MANIFEST', `${what}: entry "${name}": too many levels of links`);
  };

  const openRange = (entry: TarEntry, options?: OpenOptions): Readable => {
    if (entry.size === 0) return Readable.from([]);
    const range = createReadStream(file, { start: entry.offset, end: entry.offset + entry.size - 1 });
    // A read failure (the archive gone, EIO) names the archive and entry, not a temp file path.
    const out = new PassThrough();
    range.on('error', (err) => {
      out.destroy(new FerryError('IO_ERROR', `${what}: read entry "${entry.name}": ${messageOf(err)}`, { cause: err }));
    });
    out.on('close', () => range.destroy());
    range.pipe(out);
    return options?.signal ? addAbortSignal(options.signal, out) : out;
  };

  const readRange = async (entry: TarEntry, length: number): Promise<Buffer> => {
    const handle = await open(file, 'r');
    try {
      const buf = await readAt(handle, length, entry.offset);
      if (buf.length !== length) throw new FerryError('IO_ERROR', `${what}: entry "${entry.name}": the archive changed while reading it`);
      return buf;
    } finally {
      await handle.close();
    }
  };

  return {
    file,
    what,
    entries,
    lookup,
    open: openRange,
    async read(entry, max) {
      if (entry.size > max) {
        throw new FerryError('INVALID_MANIFEST', `${what}: entry "${entry.name}" is ${entry.size} bytes, over the ${max}-byte limit`);
      }
      return readRange(entry, entry.size);
    },
    async head(entry, length) {
      return readRange(entry, Math.min(length, entry.size));
    },
  };
}
