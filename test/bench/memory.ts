import { access } from 'node:fs/promises';
import { buildTestLayout } from '../helpers/test-images.js';
import { Bench, FERRY, ferryHas, perRun, rss } from './context.js';
import { note, sh, type Contender } from './measure.js';
import { missing } from './report.js';

const SIZES: ReadonlyArray<readonly [label: string, bytes: number]> = [
  ['64 MiB', 64 * 2 ** 20],
  ['1 GiB', 2 ** 30],
];

/** A layout with one image whose top layer is one file of pseudo-random bytes (built once, kept). */
async function bigLayout(b: Bench, label: string, bytes: number): Promise<string> {
  const dir = b.path(`big-${label.replace(' ', '')}`);
  try {
    await access(`${dir}/index.json`);
  } catch {
    note(`memory: building a layout with a ${label} layer`);
    await sh(`rm -rf ${dir}`);
    await buildTestLayout(dir, { bigLayerBytes: bytes });
  }
  return dir;
}

/**
 * Peak RSS of export and import as one layer grows from 64 MiB to 1 GiB: memory must be bounded by
 * the zstd window and stream buffers, never by the layer. At the default window (2^27 = 128 MiB)
 * a 64 MiB layer does not fill the window, so a smaller peak there is expected; `--window-log 24`
 * (16 MiB, filled by both) isolates buffering anywhere else.
 */
export async function memorySection(b: Bench): Promise<void> {
  const s = 'memory: peak RSS, one 64 MiB vs one 1 GiB layer';
  const importBuilt = await ferryHas('import');
  const contenders: Contender[] = [];
  for (const [label, bytes] of SIZES) {
    const dir = await bigLayout(b, label, bytes);
    const id = label.replace(' ', '');
    const out = b.path(`big-${id}.tar.zst`);
    contenders.push({ id: `memory.export-${id}`, prep: `rm -f ${out}`, command: `${FERRY} export -q -o ${out} oci:${dir}:big && sync` });
    contenders.push({ id: `memory.export-w24-${id}`, prep: `rm -f ${out}.w24`, command: `${FERRY} export -q --window-log 24 -o ${out}.w24 oci:${dir}:big && sync` });
    if (importBuilt) {
      for (const [suffix, bundle] of [['', out], ['-w24', `${out}.w24`]] as const) {
        const store = b.path(`store-big${suffix}-${id}`);
        const make = suffix === '' ? `${FERRY} export -q -o ${bundle} oci:${dir}:big` : `${FERRY} export -q --window-log 24 -o ${bundle} oci:${dir}:big`;
        contenders.push({ id: `memory.import${suffix}-${id}`, prep: `rm -rf ${store}; [ -f ${bundle} ] || ${make}`, command: `${FERRY} --root ${store} import -q ${bundle} >/dev/null && sync` });
      }
    }
  }
  const m = await b.race(contenders);
  const flat = (figure: string, id: string, note?: string): void => {
    const built = id.startsWith('export') || importBuilt;
    b.add({
      section: s,
      figure,
      unit: 'MB',
      ferry: built ? rss(m.get(`memory.${id}-1GiB`)) : missing('not built'),
      peer: { name: 'same, 64 MiB layer', value: built ? rss(m.get(`memory.${id}-64MiB`)) : missing('not built') },
      target: { of: 'ratio', max: 1.2, text: '<= 1.2x (flat)' },
      runs: perRun(m.get(`memory.${id}-1GiB`), m.get(`memory.${id}-64MiB`), 'rss'),
      ...(note === undefined ? {} : { note }),
    });
  };
  const windowNote = 'a 64 MiB layer does not fill the 128 MiB window';
  flat('export, 1 GiB layer, default', 'export', windowNote);
  flat('export, 1 GiB layer, --window-log 24', 'export-w24');
  flat('import, 1 GiB layer, default bundle', 'import', windowNote);
  flat('import, 1 GiB layer, --window-log 24 bundle', 'import-w24');
  b.add({ section: s, figure: 'export, 1 GiB layer, default', unit: 'MB', ferry: rss(m.get('memory.export-1GiB')), target: { of: 'ferry', max: 350e6, text: '<= 350 MB' } });
  b.add({
    section: s,
    figure: 'import, 1 GiB layer, default bundle',
    unit: 'MB',
    ferry: importBuilt ? rss(m.get('memory.import-1GiB')) : missing('not built'),
    target: { of: 'ferry', max: 250e6, text: '<= 250 MB' },
  });
  await sh(`rm -rf ${b.path('store-big*')} ${b.path('big-*.tar.zst*')}`);
}
