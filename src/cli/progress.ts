import type { ProgressEvent } from '../io/progress.js';

/** 12.3 MB style sizes for people. */
export function humanBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let n = bytes;
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
}

function humanDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
}

interface Item {
  label: string;
  total: number | undefined;
  bytes: number;
  started: number;
}

/**
 * Shows progress events: on a TTY, one live line per item in flight (bytes, speed, ETA), redrawn
 * at most every 100 ms; otherwise one plain line when an item finishes, so logs stay readable.
 */
export class ProgressView {
  private readonly out: NodeJS.WriteStream;
  private readonly live: boolean;
  private readonly items = new Map<string, Item>();
  private drawn = 0;
  private lastDraw = 0;

  constructor(out: NodeJS.WriteStream = process.stderr, quiet = false) {
    this.out = out;
    this.live = !quiet && out.isTTY === true && process.env.TERM !== 'dumb';
    this.quiet = quiet;
  }

  private readonly quiet: boolean;

  readonly listener = (event: ProgressEvent): void => this.handle(event);

  handle(event: ProgressEvent): void {
    if (this.quiet) return;
    switch (event.kind) {
      case 'start':
        this.items.set(event.id, { label: event.label, total: event.total, bytes: 0, started: Date.now() });
        break;
      case 'advance': {
        const item = this.items.get(event.id);
        if (item) item.bytes += event.bytes;
        break;
      }
      case 'done': {
        const item = this.items.get(event.id);
        this.items.delete(event.id);
        const seconds = item ? (Date.now() - item.started) / 1000 : 0;
        const how = event.skipped ? 'already present' : seconds > 0.5 ? `${humanBytes(event.bytes / seconds)}/s` : 'done';
        this.line(`${event.label}: ${humanBytes(event.bytes)} (${how})`);
        break;
      }
      case 'note':
        this.line(event.message);
        break;
    }
    this.draw(event.kind !== 'advance');
  }

  /** Print a finished line above the live block. */
  private line(text: string): void {
    this.clear();
    this.out.write(`${text}\n`);
  }

  private clear(): void {
    if (!this.live || this.drawn === 0) return;
    this.out.write(`\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }

  private draw(force: boolean): void {
    if (!this.live) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.clear();
    // A pty nobody sized (script(1) without a terminal, some CI runners) reports 0 columns.
    const width = this.out.columns || 80;
    const lines: string[] = [];
    for (const item of [...this.items.values()].slice(0, 8)) {
      const seconds = (now - item.started) / 1000;
      const speed = seconds > 0 ? item.bytes / seconds : 0;
      const of = item.total ? ` / ${humanBytes(item.total)}` : '';
      const eta = item.total && speed > 0 ? ` ETA ${humanDuration((item.total - item.bytes) / speed)}` : '';
      lines.push(`${item.label}: ${humanBytes(item.bytes)}${of} ${humanBytes(speed)}/s${eta}`.slice(0, width - 1));
    }
    if (lines.length > 0) this.out.write(`${lines.join('\n')}\n`);
    this.drawn = lines.length;
  }

  /** Remove the live block (before the final summary). */
  finish(): void {
    this.clear();
  }
}
