import { getAsset, getRawAsset } from 'node:sea';
import { FerryError } from '../errors.js';
import { usePackedBuild, type NativePartName, type PackedBuild } from '../io/native-parts.js';
import { mark } from '../io/timing.js';
import { runAndExit } from './main.js';

/**
 * The entry of the packed executable (`npm run pack` bundles this file into the SEA's one
 * script): it tells io/native-parts where the native parts are, then runs the same CLI as
 * bin/ferry.js. Code reaches it only through the executable: the SEA is made with
 * execArgvExtension "none" (NODE_OPTIONS is ignored) and its require() loads built-ins only.
 */

/** pack.json, written by scripts/pack/pack.js beside the parts. */
interface PackManifest {
  ferryVersion: string;
  platform: string;
  parts: PackedBuild['parts'];
}

function readManifest(): PackManifest {
  const value = JSON.parse(getAsset('pack.json', 'utf8')) as Partial<PackManifest>;
  if (typeof value.ferryVersion !== 'string' || typeof value.platform !== 'string' || typeof value.parts !== 'object') {
    throw new FerryError('UNSUPPORTED', `${process.execPath}: its pack.json is not what this ferry expects`, { hint: 'make the executable again with `npm run pack`' });
  }
  return value as PackManifest;
}

function readPart(name: NativePartName): Uint8Array {
  const raw = getRawAsset(name);
  return typeof raw === 'string' ? Buffer.from(raw, 'utf8') : new Uint8Array(raw);
}

// FERRY_TIMING=1: Node (and the bundled script's static imports) got here; main() marks the rest.
mark('node');
const manifest = readManifest();
usePackedBuild({ ...manifest, nodeVersion: process.version, read: readPart });
// SEA main scripts are CommonJS: no top-level await. runAndExit never rejects (main reports every error).
void runAndExit(process.argv.slice(2));
