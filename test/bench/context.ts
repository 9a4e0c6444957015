import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IMAGES, fullRef } from './corpus.js';
import { note, race, sh, type Contender, type Measured } from './measure.js';
import { missing, type PerRun, type Row, type Value } from './report.js';

/** The repository root: this file runs from build/bench/bench/. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FERRY_BIN = join(REPO, 'bin', 'ferry.js');
/** `ferry` as the bench runs it: the repo's bin under the node that runs the bench. */
export const FERRY = `${process.execPath} ${FERRY_BIN}`;

/** Everything the sections share: where to work, how often to run, what was measured. */
export class Bench {
  readonly rows: Row[] = [];
  readonly measured = new Map<string, Measured | Error>();
  readonly commands = new Map<string, string>();
  readonly findings: string[] = [];
  readonly refs = IMAGES.map(([, ref]) => fullRef(ref));

  constructor(
    readonly work: string,
    readonly runs: number,
    readonly runRuns: number,
  ) {}

  path(...parts: string[]): string {
    return join(this.work, ...parts);
  }

  /** A podman with its own store under the work directory (overlay driver, cgroupfs: no systemd here). */
  podman(name: string): string {
    const d = this.path(name);
    return `podman --root ${d}/root --runroot ${d}/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend file`;
  }

  /** Shell that empties such a store, unmounting what it left mounted. */
  podmanClean(name: string): string {
    const d = this.path(name);
    const p = this.podman(name);
    return `${p} rm -a -f >/dev/null 2>&1 || true; ${p} rmi -a -f >/dev/null 2>&1 || true; { grep -o ' ${d}/[^ ]*' /proc/mounts || true; } | sort -r | xargs -r -n1 umount -l; rm -rf ${d}`;
  }

  /**
   * Shell that moves a tree out of the way instead of deleting it. ext4 skips inodes freed in the
   * last minutes when it allocates new ones (recently_deleted(): 20-30% of the CPU of an import
   * right after an `rm -rf` of 12k files, GNU tar alike), so deleting the previous run's store
   * just before the next run made every import slower, by an amount that depended on the order
   * of the contenders (this VM's ext4 has no journal; only then does ext4 make that check).
   * `emptyTrash` deletes them at the start of the next bench: the export section that follows
   * takes longer than ext4's 5-minute horizon, so the import section starts clear of them.
   */
  discard(path: string): string {
    return `mkdir -p ${this.path('trash')}; { [ ! -e ${path} ] || mv ${path} ${this.path('trash')}/$(date +%s%N); }`;
  }

  emptyTrash(): string {
    return `rm -rf ${this.path('trash')}`;
  }

  /** Like podmanClean, but the store is moved aside (see discard), not deleted. */
  podmanDiscard(name: string): string {
    const d = this.path(name);
    return `{ grep -o ' ${d}/[^ ]*' /proc/mounts || true; } | sort -r | xargs -r -n1 umount -l; ${this.discard(d)}`;
  }

  /** Commands as RESULTS.md shows them: the long parts named. */
  display(command: string): string {
    return command
      .split(this.refs.join(' '))
      .join('$REFS')
      .split(FERRY)
      .join('ferry')
      .split(this.work)
      .join('$W');
  }

  async race(contenders: readonly Contender[], runs = this.runs): Promise<Map<string, Measured | Error>> {
    for (const c of contenders) this.commands.set(c.id, this.display(c.command));
    const result = await race(contenders, runs);
    for (const [id, m] of result) this.measured.set(id, m);
    return result;
  }

  add(row: Row): void {
    this.rows.push(row);
  }

  finding(text: string): void {
    this.findings.push(text);
  }
}

export function wall(m: Measured | Error | undefined): Value {
  return m === undefined ? missing('not run') : m instanceof Error ? missing('failed') : m.wall;
}
export function cpu(m: Measured | Error | undefined): Value {
  return m === undefined ? missing('not run') : m instanceof Error ? missing('failed') : m.cpu;
}
export function rss(m: Measured | Error | undefined): Value {
  return m === undefined ? missing('not run') : m instanceof Error ? missing('failed') : m.rss;
}

export async function fileSize(path: string): Promise<Value> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    return missing(`no output (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Bytes the filesystem really uses for a tree (du -B1: allocated, hard links once). */
export async function diskUsage(path: string): Promise<Value> {
  try {
    return Number((await sh(`du -sB1 ${path} | cut -f1`)).trim());
  } catch (err) {
    return missing(`du failed: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * Whether a ferry command is built: a planned one says "(not built yet)" in its help. The import
 * and runtime work lands while the bench is written; a row for a missing command says so.
 */
export async function ferryHas(command: string): Promise<boolean> {
  try {
    const help = await sh(`${FERRY} ${command} --help`);
    return !/not built yet/.test(help);
  } catch (err) {
    note(`ferry ${command} --help failed: ${(err as Error).message.split('\n')[0]}`);
    return false;
  }
}

/** The runs of both sides, for a ratio taken run by run (see ratioOf). */
export function perRun(ferry: Measured | Error | undefined, peer: Measured | Error | undefined, metric: PerRun['metric']): PerRun {
  return { ferry, peer, metric };
}
