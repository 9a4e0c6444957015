import { closeSync, openSync, readSync } from 'node:fs';
import { FerryError, messageOf } from '../errors.js';

/**
 * Random bytes for names and ids (container ids, temp names, owner tokens) from the kernel's
 * generator, the one node:crypto's randomBytes seeds from, without loading node:crypto (see
 * io/builtins.ts): read POOL_SIZE bytes at a time and handed out in order, never twice.
 */
const POOL_SIZE = 512;
const URANDOM = '/dev/urandom';

let pool: Buffer = Buffer.alloc(0);
let used = 0;

function readUrandom(length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let fd: number;
  try {
    fd = openSync(URANDOM, 'r');
  } catch (err) {
    throw new FerryError('IO_ERROR', `${URANDOM}: ${messageOf(err)}`, { cause: err, hint: 'ferry needs the kernel\'s random source: mount /dev (devtmpfs) in this environment' });
  }
  try {
    for (let at = 0; at < length; ) {
      const n = readSync(fd, bytes, at, length - at, null);
      if (n === 0) throw new FerryError('IO_ERROR', `${URANDOM}: ended after ${at} of ${length} bytes`, { hint: 'it is not the kernel\'s random device: check /dev' });
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/** `length` fresh random bytes. */
export function randomBytes(length: number): Buffer {
  if (length > POOL_SIZE) return readUrandom(length);
  if (used + length > pool.length) {
    pool = readUrandom(POOL_SIZE);
    used = 0;
  }
  const out = Buffer.from(pool.subarray(used, used + length));
  used += length;
  return out;
}
