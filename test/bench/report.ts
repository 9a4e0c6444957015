import { median, type Measured } from './measure.js';

export type Unit = 's' | 'MB' | 'bytes' | 'KiB';

/** A figure that could not be measured says why instead of a number. */
export type Value = number | { missing: string };

/**
 * One line of the table: ferry's figure next to a peer's, measured in the same run. A target is
 * checked against the ratio (ferry / peer) or against ferry's own figure.
 */
export interface Row {
  section: string;
  figure: string;
  unit: Unit;
  ferry: Value;
  peer?: { name: string; value: Value };
  target?: { of: 'ratio' | 'ferry'; max: number; text: string };
  note?: string;
  /** When both sides were timed run by run: the ratio is the median of the per-run ratios. */
  runs?: PerRun;
}

export interface PerRun {
  ferry: Measured | Error | undefined;
  peer: Measured | Error | undefined;
  metric: 'wall' | 'cpu' | 'rss';
}

export function missing(why: string): Value {
  return { missing: why };
}

export function isNumber(v: Value | undefined): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

export function format(v: Value, unit: Unit): string {
  if (!isNumber(v)) return v.missing;
  switch (unit) {
    case 's':
      return v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(2)} s`;
    case 'MB':
      return `${(v / 1e6).toFixed(0)} MB`;
    case 'bytes':
      return v >= 1e6 ? `${(v / 1e6).toFixed(1)} MB` : `${v} B`;
    case 'KiB':
      return `${(v / 1024).toFixed(1)} KiB`;
  }
}

/**
 * ferry / peer. Contenders run interleaved, so run i of each saw about the same load: the median
 * of the per-run ratios is steadier on a shared machine than the ratio of the medians.
 */
export function ratioOf(row: Row): number | undefined {
  const r = row.runs;
  if (r && r.ferry && r.peer && !(r.ferry instanceof Error) && !(r.peer instanceof Error) && r.ferry.samples.length === r.peer.samples.length && r.ferry.samples.length > 0) {
    const peer = r.peer.samples;
    const ratios = r.ferry.samples.map((s, i) => s[r.metric] / peer[i]![r.metric]).filter((x) => Number.isFinite(x));
    if (ratios.length > 0) return median(ratios);
  }
  if (!row.peer || !isNumber(row.ferry) || !isNumber(row.peer.value) || row.peer.value === 0) return undefined;
  return row.ferry / row.peer.value;
}

/** 'yes', 'NO', or '' when the row has no target or no number to check. */
export function holds(row: Row): string {
  if (!row.target) return '';
  const v = row.target.of === 'ratio' ? ratioOf(row) : isNumber(row.ferry) ? row.ferry : undefined;
  if (v === undefined) return '';
  return v <= row.target.max ? 'yes' : '**NO**';
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = ['| figure | ferry | peer | ratio | target | holds |', '|---|---:|---|---:|---|---|'];
  let section = '';
  for (const row of rows) {
    if (row.section !== section) {
      section = row.section;
      lines.push(`| **${cell(section)}** | | | | | |`);
    }
    const ratio = ratioOf(row);
    const peer = row.peer ? `${format(row.peer.value, row.unit)} (${row.peer.name})` : '';
    lines.push(
      `| ${cell(row.figure)}${row.note ? ` <sup>${cell(row.note)}</sup>` : ''} | ${cell(format(row.ferry, row.unit))} | ${cell(peer)} | ${ratio === undefined ? '' : `${ratio.toFixed(2)}x`} | ${cell(row.target?.text ?? '')} | ${holds(row)} |`,
    );
  }
  return lines.join('\n');
}

/** Every run of every timed command, for RESULTS.md: medians hide spread, and this machine is noisy. */
export function samplesTable(measured: ReadonlyMap<string, Measured | Error>, commands: ReadonlyMap<string, string>): string {
  const lines = ['| id | runs: wall s / CPU s / peak RSS MB | median wall | command |', '|---|---|---:|---|'];
  for (const [id, m] of measured) {
    const command = cell(commands.get(id) ?? '');
    if (m instanceof Error) {
      lines.push(`| ${id} | failed: ${cell(m.message.split('\n')[0] ?? '')} | | \`${command}\` |`);
      continue;
    }
    const n = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
    const runs = m.samples.map((s) => `${n(s.wall, 3)}/${n(s.cpu, 2)}/${n(s.rss / 1e6, 0)}`).join(', ');
    lines.push(`| ${id} | ${runs} | ${m.wall.toFixed(3)} | \`${command}\` |`);
  }
  return lines.join('\n');
}
