import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Every path of a rootfs with its type, mode, owner and content hash or link target: two trees
 * compare equal when an image unpacked two ways (umoci, overlay, another store) has the same content.
 */
export async function fileTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const path = join(root, rel);
    const st = await lstat(path);
    let detail = '';
    if (st.isFile()) detail = createHash('sha256').update(await readFile(path)).digest('hex').slice(0, 12);
    if (st.isSymbolicLink()) detail = `-> ${await readlink(path)}`;
    if (rel !== '') out[rel] = `${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${detail}`;
    if (st.isDirectory()) for (const name of (await readdir(path)).sort()) await walk(rel === '' ? name : `${rel}/${name}`);
  };
  await walk('');
  return out;
}
