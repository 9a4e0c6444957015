import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, messageOf } from '../errors.js';
import { Ingestion, tempPathFor } from '../io/atomic-file.js';
import { isToolFileName, type BundleTool } from './format.js';
import { sha256File } from './volumes.js';

/**
 * Files carried beside a bundle (`export --with-ferry`): the ferry executable goes next to the
 * volumes under its standard name, its size and sha256 go into ferry-bundle.json (so a signature
 * covers it) and into NAME.sha256 (so `sha256sum -c` checks it without ferry).
 */

/** Copy `source` into `dir` as `name` (an io Ingestion: atomically, mode 0755), hashing it on the way. */
export async function carryFile(source: string, dir: string, name: string, platform: string): Promise<BundleTool> {
  if (!isToolFileName(name)) throw new FerryError('USAGE', `carry ${name}: not a plain file name`);
  const target = join(dir, name);
  const same = await realpath(target).then(
    async (t) => t === (await realpath(source)),
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
  if (same) {
    // Exporting into the directory the executable already is in: nothing to copy.
    return { file: name, size: (await stat(target)).size, sha256: await sha256File(target), platform };
  }
  const hash = createHash('sha256');
  let size = 0;
  let file: Ingestion | undefined;
  try {
    file = await Ingestion.open(tempPathFor(target), 0o755);
    for await (const chunk of createReadStream(source, { highWaterMark: 1024 * 1024 })) {
      const b = chunk as Buffer;
      hash.update(b);
      size += b.length;
      await file.write(b);
    }
    // open(2) narrowed the mode by the umask: whoever unpacks the bundle must be able to run it.
    await file.handle.chmod(0o755);
    await file.commit(target);
  } catch (err) {
    await file?.abort();
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(code === 'ENOSPC' ? 'NO_SPACE' : code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR', `copy ${source} to ${target}: ${messageOf(err)}`, { cause: err });
  }
  return { file: name, size, sha256: hash.digest('hex'), platform };
}

/** not-checked: the bundle came from stdin, so there is no directory to look in. */
export type ToolState = 'verified' | 'missing' | 'damaged' | 'not-checked';

export interface ToolCheck {
  file: string;
  path: string;
  state: ToolState;
  /** What is wrong, when not verified. */
  problem?: string;
}

/**
 * Check a carried file against the header (and NAME.sha256's line, when it has one). The header
 * is the authority: with a verified signature, so is the file.
 */
export async function checkTool(dir: string, tool: BundleTool, listed: string | undefined): Promise<ToolCheck> {
  const path = join(dir, tool.file);
  let actual: string;
  try {
    actual = await sha256File(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { file: tool.file, path, state: 'missing', problem: `${tool.file} is missing: the bundle carries it beside its volumes (${path})` };
  }
  if (actual !== tool.sha256) {
    return { file: tool.file, path, state: 'damaged', problem: `${tool.file} is damaged: its sha256 ${actual} does not match ${tool.sha256} in ferry-bundle.json` };
  }
  if (listed !== undefined && listed !== actual) {
    return { file: tool.file, path, state: 'damaged', problem: `${tool.file}: the .sha256 file lists ${listed}, ferry-bundle.json ${tool.sha256}` };
  }
  return { file: tool.file, path, state: 'verified' };
}
