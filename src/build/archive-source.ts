import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { FerryError, messageOf } from '../errors.js';
import { unpackLayerTar } from '../store/index.js';
import { ContextTree, type SourceNode, type SourceTree } from './source-tree.js';

/**
 * ADD's auto-extraction of a local archive (tar, gzip, bzip2, xz; as docker: by content, not by
 * name). The archive is hostile input: the store's layer unpacker (the one every imported layer
 * goes through) extracts it into a private directory of the store's tmp/, and the COPY planner
 * then reads that directory like a context that cannot be left. node-tar is not used: it rewrites
 * absolute symlink targets, which images rely on. bzip2 and xz are decoded by the system's
 * `bzip2`/`xz`: Node has no decoder for them and they are on every Debian host.
 */
type Kind = 'gzip' | 'bzip2' | 'xz' | 'tar';

function kindOf(head: Buffer): Kind | undefined {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return undefined;
}

async function headOf(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= 512) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, 512);
}

export async function isLocalArchive(stream: Readable): Promise<boolean> {
  return kindOf(await headOf(stream)) !== undefined;
}

class Hash extends Transform {
  readonly hash = createHash('sha256');
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }
}

/** Decode with the system's bzip2/xz: the archive goes to its stdin, the tar comes from its stdout. */
function decodeWith(kind: 'bzip2' | 'xz', input: Readable, what: string): { tar: Readable; exited: Promise<void> } {
  const child = spawn(kind, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (err) => reject(new FerryError('UNSUPPORTED', `${what}: cannot decode the ${kind} archive: ${messageOf(err)}`, { hint: `install ${kind}`, cause: err })));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new FerryError('INVALID_LAYER', `${what}: the ${kind} archive is damaged: ${stderr.trim()}`))));
  });
  const fed = pipeline(input, child.stdin);
  // A failure to feed shows as the decoder's own failure (or the unpacker's) below.
  fed.catch((err: unknown) => child.stdout.destroy(err instanceof Error ? err : new Error(String(err))));
  return { tar: child.stdout, exited };
}

/**
 * Extract `node` of `tree` into `dir` with the store's hostile-input-safe unpacker (names with
 * `..` and writes through symlinks refused, symlink targets kept as written, owners kept); the
 * contents as a tree, and the archive's digest for the cache.
 */
export async function extractArchive(tree: SourceTree, node: SourceNode, dir: string, what: string): Promise<{ tree: ContextTree; digest: string }> {
  const kind = kindOf(await headOf(tree.open(node)));
  if (kind === undefined) throw new FerryError('UNSUPPORTED', `${what}: ${node.rel} is not an archive`);
  await mkdir(dir, { mode: 0o700 });
  const hash = new Hash();
  const label = `${what}: ADD ${node.rel}`;
  const source = tree.open(node).pipe(hash);
  if (kind === 'bzip2' || kind === 'xz') {
    const { tar, exited } = decodeWith(kind, source, label);
    await Promise.all([unpackLayerTar(tar, dir, { what: label }), exited]);
  } else {
    await unpackLayerTar(kind === 'gzip' ? source.pipe(createGunzip()) : source, dir, { what: label });
  }
  return { tree: await ContextTree.open(dir, ''), digest: hash.hash.digest('hex') };
}
