import { writeFile } from 'node:fs/promises';
import { Bench, FERRY, diskUsage, ferryHas, perRun, rss, wall } from './context.js';
import { defaultBundle, podmanArchive } from './export.js';
import { note, sh, type Contender } from './measure.js';
import { missing } from './report.js';

export function importStore(b: Bench): string {
  return b.path('store-import');
}

/**
 * The floor of an import: the bundle decompressed by zstd and every layer extracted by GNU tar
 * into its own directory on the same disk, in one pass (tar --to-command hands each layer blob to
 * a second tar; manifests and configs are read and dropped).
 */
export async function writeFloorScript(b: Bench, bundle: string, into = b.path('floor'), name = 'floor'): Promise<string> {
  // tar stops after the first entry; zstd then dies of SIGPIPE, which is expected here.
  const headerText = await sh(`set +o pipefail; zstd -q -d --long=31 -c ${bundle} 2>/dev/null | tar -xO --occurrence=1 -f - ferry-bundle.json`);
  const header = JSON.parse(headerText) as { blobs: Array<{ digest: string; kind: string }> };
  const layers = header.blobs.filter((x) => x.kind === 'layer').map((x) => x.digest.replace(/^sha256:/, ''));
  const list = b.path(`${name}-layers.txt`);
  await writeFile(list, `${layers.join('\n')}\n`);
  const script = b.path(`${name}-entry.sh`);
  await writeFile(
    script,
    [
      '#!/bin/sh',
      '# tar --to-command: one bundle entry on stdin; layers are extracted, everything else is read and dropped',
      'n=${TAR_FILENAME##*/}',
      `if grep -qx "$n" ${list}; then mkdir -p ${into}/"$n" && exec tar -x -C ${into}/"$n" -f -; fi`,
      'exec cat >/dev/null',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  note(`${name}: ${layers.length} layers`);
  return script;
}

/** Import of the default bundle into an empty store, next to podman load of the same images and the floor. */
export async function importSection(b: Bench): Promise<void> {
  const s = 'import: the seven-image bundle into an empty store';
  const bundle = defaultBundle(b);
  await sh(`[ -f ${bundle} ] || ${FERRY} export -q --cache-dir ${b.path('cache-cold')} -o ${bundle} ${b.refs.join(' ')}`);
  const built = await ferryHas('import');
  const floorScript = await writeFloorScript(b, bundle);
  const store = importStore(b);
  const contenders: Contender[] = [];
  if (built) contenders.push({ id: 'import.ferry', prep: b.discard(store), command: `${FERRY} --root ${store} import -q ${bundle} >/dev/null && sync` });
  const archive = podmanArchive(b);
  const havePodman = (await sh(`[ -f ${archive} ] && echo yes || echo no`)).trim() === 'yes';
  if (havePodman) contenders.push({ id: 'import.podman', prep: b.podmanDiscard('podman-load'), command: `${b.podman('podman-load')} load -q -i ${archive} >/dev/null && sync` });
  contenders.push({
    id: 'import.floor',
    prep: `${b.discard(b.path('floor'))}; mkdir -p ${b.path('floor')}`,
    command: `zstd -q -d --long=31 -c ${bundle} | tar -x -C ${b.path('floor')} --to-command=${floorScript} -f - && sync`,
  });
  const m = await b.race(contenders);
  const ferry = built ? wall(m.get('import.ferry')) : missing('not built');
  const podman = havePodman ? wall(m.get('import.podman')) : missing('no podman archive');
  b.add({ section: s, figure: 'wall', unit: 's', ferry, peer: { name: 'podman load', value: podman }, target: { of: 'ratio', max: 0.5, text: '<= 0.5x' }, runs: perRun(m.get('import.ferry'), m.get('import.podman'), 'wall') });
  b.add({ section: s, figure: 'wall', unit: 's', ferry, peer: { name: 'floor: zstd -d | tar -x per layer', value: wall(m.get('import.floor')) }, target: { of: 'ratio', max: 1.2, text: '<= 1.2x' }, runs: perRun(m.get('import.ferry'), m.get('import.floor'), 'wall') });
  b.add({ section: s, figure: 'peak RSS', unit: 'MB', ferry: built ? rss(m.get('import.ferry')) : missing('not built'), peer: { name: 'podman load', value: havePodman ? rss(m.get('import.podman')) : missing('no podman archive') }, target: { of: 'ferry', max: 250e6, text: '<= 250 MB' } });
  b.add({
    section: s,
    figure: 'disk used by the store',
    unit: 'bytes',
    ferry: built ? await diskUsage(store) : missing('not built'),
    peer: { name: 'podman load', value: havePodman ? await diskUsage(b.path('podman-load', 'root')) : missing('no podman archive') },
  });
  // Moved aside, deleted at the start of the next bench (see Bench.discard). The store stays:
  // the run section starts redis from it.
  await sh(`${b.podmanDiscard('podman-load')}; ${b.discard(b.path('floor'))}`);
}
