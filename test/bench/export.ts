import { IMAGES, fullRef } from './corpus.js';
import { Bench, FERRY, cpu, fileSize, perRun, rss, wall } from './context.js';
import { note, sh, type Contender } from './measure.js';
import { missing, type Value } from './report.js';

/** Paths later sections reuse. */
export function defaultBundle(b: Bench): string {
  return b.path('ferry-default.tar.zst');
}
export function podmanArchive(b: Bench): string {
  return b.path('podman-all.tar');
}
export const PODMAN_SRC = 'podman-src';

/** Fill a podman store with the seven images (untimed), for podman save, podman run. */
export async function preparePodman(b: Bench): Promise<string | undefined> {
  const pod = b.podman(PODMAN_SRC);
  try {
    for (const ref of b.refs) await sh(`${pod} image exists ${ref} || ${pod} pull -q --tls-verify=false ${ref} >/dev/null`);
    return undefined;
  } catch (err) {
    const why = (err as Error).message.split('\n').slice(0, 3).join(' ');
    note(`podman cannot pull here: ${why}`);
    return 'podman failed';
  }
}

/**
 * Export of all seven images, from a fresh pull cache each run: ferry at its defaults and at
 * `--level max`, next to the Hauler-equivalent (skopeo copy into one OCI layout, then
 * tar | zstd -3) and podman save -m | zstd -3.
 */
export async function exportSection(b: Bench): Promise<void> {
  const refs = b.refs.join(' ');
  const podmanBroken = await preparePodman(b);
  const pod = b.podman(PODMAN_SRC);
  const haul = b.path('haul');
  const out = {
    hauler: b.path('haul.tar.zst'),
    podman: b.path('podman.tar.zst'),
    ferry: defaultBundle(b),
    max: b.path('ferry-max.tar.zst'),
    warm: b.path('ferry-warm.tar.zst'),
  };
  const skopeo = IMAGES.map(([, ref]) => `skopeo copy -q --src-tls-verify=false docker://${fullRef(ref)} oci:${haul}:${ref}`).join('; ');
  const contenders: Contender[] = [
    { id: 'export.hauler', prep: `rm -rf ${haul} ${out.hauler}`, command: `${skopeo}; tar --sort=name -C ${haul} -cf - . | zstd -q -T0 -3 -o ${out.hauler}; sync` },
    { id: 'export.ferry', prep: `rm -rf ${b.path('cache-cold')} ${out.ferry}`, command: `${FERRY} export -q --cache-dir ${b.path('cache-cold')} -o ${out.ferry} ${refs} && sync` },
    {
      id: 'export.ferry-warm',
      prep: `rm -f ${out.warm}; [ -d ${b.path('cache-warm')} ] || ${FERRY} export -q --cache-dir ${b.path('cache-warm')} -o ${out.warm} ${refs}; rm -f ${out.warm}`,
      command: `${FERRY} export -q --cache-dir ${b.path('cache-warm')} -o ${out.warm} ${refs} && sync`,
    },
    { id: 'export.ferry-max', prep: `rm -rf ${b.path('cache-max')} ${out.max}`, command: `${FERRY} export -q --level max --cache-dir ${b.path('cache-max')} -o ${out.max} ${refs} && sync` },
  ];
  // The same work as ferry's default export done by C tools, as a floor: the registry blobs
  // pulled, every layer gunzipped once, one zstd -9 --long=27 stream on two threads (layers in
  // digest order, not ferry's: the bytes are not comparable, the time is).
  const floorOut = b.path('floor.zst');
  const gunzipAll = `for f in ${haul}-floor/blobs/sha256/*; do if [ "$(head -c2 $f | od -An -tx1 | tr -d ' ')" = 1f8b ]; then pigz -dc $f; else cat $f; fi; done`;
  contenders.push({
    id: 'export.floor',
    prep: `rm -rf ${haul}-floor ${floorOut}`,
    command: `${skopeo.split(`oci:${haul}:`).join(`oci:${haul}-floor:`)}; ${gunzipAll} | zstd -q -T2 -9 --long=27 -o ${floorOut}; sync`,
  });
  if (podmanBroken === undefined) {
    contenders.splice(1, 0, { id: 'export.podman', prep: `rm -f ${out.podman}`, command: `${pod} save -q -m --format docker-archive ${refs} | zstd -q -T0 -3 -o ${out.podman} && sync` });
  }
  const m = await b.race(contenders);
  const hauler = m.get('export.hauler');
  const podman = m.get('export.podman');
  const podmanWall: Value = podmanBroken === undefined ? wall(podman) : missing(podmanBroken);
  const s = 'export: all seven images, fresh pull cache';
  const H = 'Hauler-eq.';
  const P = 'podman save -m | zstd -3';
  const ferry = m.get('export.ferry');
  const max = m.get('export.ferry-max');
  b.add({ section: s, figure: 'wall, default', unit: 's', ferry: wall(ferry), peer: { name: H, value: wall(hauler) }, target: { of: 'ratio', max: 3, text: '<= 3x' }, runs: perRun(ferry, hauler, 'wall') });
  b.add({ section: s, figure: 'wall, default', unit: 's', ferry: wall(ferry), peer: { name: P, value: podmanWall }, runs: perRun(ferry, podman, 'wall') });
  const F = 'C tools: skopeo + pigz -d + zstd -T2 -9 --long=27';
  b.add({ section: s, figure: 'wall, default', unit: 's', ferry: wall(ferry), peer: { name: F, value: wall(m.get('export.floor')) }, note: 'the same work without ferry', runs: perRun(ferry, m.get('export.floor'), 'wall') });
  b.add({ section: s, figure: 'wall, default, warm pull cache', unit: 's', ferry: wall(m.get('export.ferry-warm')), peer: { name: H, value: wall(hauler) }, note: 'no pull: decompress + compress only', runs: perRun(m.get('export.ferry-warm'), hauler, 'wall') });
  b.add({ section: s, figure: 'CPU, default', unit: 's', ferry: cpu(ferry), peer: { name: H, value: cpu(hauler) }, runs: perRun(ferry, hauler, 'cpu') });
  b.add({ section: s, figure: 'CPU, default', unit: 's', ferry: cpu(ferry), peer: { name: F, value: cpu(m.get('export.floor')) }, runs: perRun(ferry, m.get('export.floor'), 'cpu') });
  b.add({ section: s, figure: 'peak RSS, default', unit: 'MB', ferry: rss(ferry), peer: { name: H, value: rss(hauler) }, target: { of: 'ferry', max: 350e6, text: '<= 350 MB' } });
  const bytes = await fileSize(out.ferry);
  const haulBytes = await fileSize(out.hauler);
  b.add({ section: s, figure: 'bundle bytes, default', unit: 'bytes', ferry: bytes, peer: { name: H, value: haulBytes }, target: { of: 'ratio', max: 0.55, text: '<= 0.55x' } });
  b.add({ section: s, figure: 'bundle bytes, default', unit: 'bytes', ferry: bytes, peer: { name: P, value: podmanBroken === undefined ? await fileSize(out.podman) : missing(podmanBroken) } });
  b.add({ section: s, figure: 'wall, --level max', unit: 's', ferry: wall(max), peer: { name: H, value: wall(hauler) }, runs: perRun(max, hauler, 'wall') });
  b.add({ section: s, figure: 'CPU, --level max', unit: 's', ferry: cpu(max), peer: { name: H, value: cpu(hauler) }, runs: perRun(max, hauler, 'cpu') });
  b.add({ section: s, figure: 'peak RSS, --level max', unit: 'MB', ferry: rss(max), peer: { name: H, value: rss(hauler) } });
  b.add({ section: s, figure: 'bundle bytes, --level max', unit: 'bytes', ferry: await fileSize(out.max), peer: { name: H, value: haulBytes }, target: { of: 'ratio', max: 0.47, text: '<= 0.47x' } });

  // The import section loads the same images with podman load: an uncompressed multi-image archive,
  // podman's fastest input.
  if (podmanBroken === undefined) await sh(`rm -f ${podmanArchive(b)}; ${pod} save -q -m --format docker-archive -o ${podmanArchive(b)} ${refs}`);
  await sh(`rm -rf ${haul} ${haul}-floor ${floorOut} ${out.warm} ${b.path('cache-max')}`);
}
