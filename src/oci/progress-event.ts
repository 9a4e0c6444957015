/**
 * Progress events of long operations (pulls, bundle writes, imports, pushes): the one event type
 * every copy emits. Library code emits them; only the CLI decides how to show them (live lines on
 * a TTY, plain lines otherwise).
 */
export type ProgressEvent =
  | { kind: 'start'; id: string; label: string; total?: number }
  | { kind: 'advance'; id: string; bytes: number }
  | { kind: 'done'; id: string; label: string; bytes: number; skipped?: boolean }
  | { kind: 'note'; message: string };

export type ProgressListener = (event: ProgressEvent) => void;

export const noProgress: ProgressListener = () => undefined;
