import { fullRef, registryManifest } from './corpus.js';
import { Bench, FERRY, fileSize, wall } from './context.js';
import { sh } from './measure.js';

/**
 * Delta: mysql:8-patched `--since` the mysql:8 bundle should carry little more than the 285-byte
 * patch layer (its manifest and config, the bundle's own header, zstd framing).
 */
export async function deltaSection(b: Bench): Promise<void> {
  const base = b.path('mysql-8.tar.zst');
  const delta = b.path('delta.tar.zst');
  const cache = b.path('cache-delta');
  await sh(`rm -f ${base}; ${FERRY} export -q --cache-dir ${cache} -o ${base} ${fullRef('library/mysql:8')}`);
  const m = await b.race([
    { id: 'delta.ferry', prep: `rm -f ${delta}`, command: `${FERRY} export -q --cache-dir ${cache} --since ${base} -o ${delta} ${fullRef('library/mysql:8-patched')} && sync` },
  ]);
  const patched = await registryManifest('library/mysql:8-patched');
  const patch = patched.layers[patched.layers.length - 1]!;
  const bytes = await fileSize(delta);
  const s = 'delta: mysql:8-patched --since the mysql:8 bundle';
  b.add({ section: s, figure: 'delta bundle bytes', unit: 'bytes', ferry: bytes, peer: { name: 'the patch layer blob', value: patch.size }, target: { of: 'ferry', max: 64 * 1024, text: '<= 64 KiB' } });
  b.add({ section: s, figure: 'delta export wall', unit: 's', ferry: wall(m.get('delta.ferry')) });
  await sh(`rm -rf ${cache}`);
}
