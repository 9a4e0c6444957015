import { createPrivateKey, createPublicKey, generateKeyPair, sign, verify, type KeyObject } from 'node:crypto';
import { open, readFile, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { FerryError, messageOf } from '../errors.js';

/**
 * Bundle signatures: ed25519 over the exact bytes of ferry-bundle.json. Keys are PEM as
 * OpenSSL writes them (`openssl genpkey -algorithm ed25519`: PKCS#8 private, SPKI public),
 * and the signature is the raw 64 bytes, so `openssl pkeyutl -verify -rawin` checks it too.
 */

const generateKeyPairAsync = promisify(generateKeyPair);

function requireEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new FerryError('USAGE', `${what}: an ${key.asymmetricKeyType ?? 'unknown'} key; bundle signing uses ed25519`, {
      hint: 'make a key pair with `ferry keygen` or `openssl genpkey -algorithm ed25519`',
    });
  }
  return key;
}

/** A private key from a KeyObject or PKCS#8 PEM text. */
export function privateKeyFrom(key: KeyObject | string, what = 'signing key'): KeyObject {
  if (typeof key !== 'string') {
    if (key.type !== 'private') throw new FerryError('USAGE', `${what}: not a private key`);
    return requireEd25519(key, what);
  }
  try {
    return requireEd25519(createPrivateKey({ key, format: 'pem' }), what);
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError('USAGE', `${what}: not a PEM private key: ${messageOf(err)}`, {
      cause: err,
      hint: 'give the NAME.pem that `ferry keygen -o NAME` wrote (PKCS#8 PEM)',
    });
  }
}

/** A public key from a KeyObject or SPKI PEM text (a private key PEM works too: its public half). */
export function publicKeyFrom(key: KeyObject | string, what = 'public key'): KeyObject {
  if (typeof key !== 'string') return requireEd25519(key.type === 'private' ? createPublicKey(key) : key, what);
  try {
    return requireEd25519(createPublicKey({ key, format: 'pem' }), what);
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError('USAGE', `${what}: not a PEM public key: ${messageOf(err)}`, {
      cause: err,
      hint: 'give the NAME.pub.pem that `ferry keygen -o NAME` wrote (SPKI PEM)',
    });
  }
}

export async function loadPrivateKey(path: string): Promise<KeyObject> {
  return privateKeyFrom(await readKeyFile(path), path);
}

export async function loadPublicKey(path: string): Promise<KeyObject> {
  return publicKeyFrom(await readKeyFile(path), path);
}

async function readKeyFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new FerryError((err as NodeJS.ErrnoException).code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR', `read key ${path}: ${messageOf(err)}`, { cause: err });
  }
}

/** The raw 64-byte ed25519 signature of the header bytes. */
export function signHeader(headerBytes: Buffer, key: KeyObject): Buffer {
  return sign(null, headerBytes, key);
}

export function verifyHeaderSignature(headerBytes: Buffer, signature: Buffer, key: KeyObject): boolean {
  return verify(null, headerBytes, key, signature);
}

export interface KeyPairFiles {
  privateKey: string;
  publicKey: string;
}

/**
 * Write NAME.pem (0600, created exclusively) and NAME.pub.pem. Existing files are never
 * overwritten: a lost private key means bundles signed with it can no longer be made.
 */
export async function writeKeyPair(name: string): Promise<KeyPairFiles> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ed25519');
  const files: KeyPairFiles = { privateKey: `${name}.pem`, publicKey: `${name}.pub.pem` };
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' });
  const created: string[] = [];
  try {
    for (const [path, text, mode] of [
      [files.privateKey, privatePem, 0o600],
      [files.publicKey, publicPem, 0o644],
    ] as const) {
      const handle = await open(path, 'wx', mode);
      created.push(path);
      try {
        await handle.writeFile(text);
        await handle.chmod(mode); // the umask must not widen or narrow it
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
  } catch (err) {
    await Promise.all(created.map((p) => rm(p, { force: true })));
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new FerryError('USAGE', `keygen: ${files.privateKey} or ${files.publicKey} already exists`, {
        cause: err,
        hint: 'choose another name with -o NAME, or move the old key pair away first',
      });
    }
    throw new FerryError('IO_ERROR', `keygen: write ${name}.pem: ${messageOf(err)}`, { cause: err });
  }
  return files;
}
