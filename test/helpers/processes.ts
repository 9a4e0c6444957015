import { spawn, type ChildProcess } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Long-running servers (docker-registry) started by tests must never outlive the test process,
 * even when a vitest worker is killed by a signal and runs no exit hook. So each server runs under
 * a small sh guard whose stdin is a pipe from us: when we stop it, or die, the pipe reaches EOF and
 * the guard sends SIGTERM to the server. An exit hook also SIGKILLs what is left, for good measure.
 */
const GUARD_SCRIPT = `
pidfile=$1; shift
exec 3<&0
"$@" </dev/null &
pid=$!
echo "$pid" > "$pidfile"
{ read -r _ <&3; kill -TERM "$pid" 2>/dev/null; } &
wait "$pid"
`;

export interface GuardedProcess {
  /** What the server wrote to stdout and stderr, appended to this file. */
  logFile: string;
  /** The server's exit code once it has exited on its own or was stopped, else undefined. */
  exitCode(): number | null | undefined;
  stop(): Promise<void>;
}

const live = new Set<{ child: ChildProcess; pidFile: string; pid: number | undefined }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const entry of live) {
      for (const pid of [entry.pid, entry.child.pid]) {
        if (pid === undefined) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
        }
      }
    }
  });
}

/** Start `command args` under the guard, its output going to `dir/NAME.log`. */
export async function spawnGuarded(name: string, command: string, args: string[], dir: string): Promise<GuardedProcess> {
  installExitHook();
  const logFile = join(dir, `${name}.log`);
  const pidFile = join(dir, `${name}.pid`);
  const log = await open(logFile, 'a');
  const child = spawn('sh', ['-c', GUARD_SCRIPT, 'guard', pidFile, command, ...args], {
    stdio: ['pipe', log.fd, log.fd],
  });
  await log.close();
  const entry = { child, pidFile, pid: undefined as number | undefined };
  live.add(entry);
  let code: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('exit', (exitCode) => {
      code = exitCode;
      resolve();
    });
  });
  child.on('error', (err) => {
    code = -1;
    process.stderr.write(`[${name}] spawn failed: ${err.message}\n`);
  });
  // The stdin pipe may break when the guard has gone; that is the point of it, not an error.
  child.stdin?.on('error', () => undefined);

  const serverPid = async (): Promise<number | undefined> => {
    if (entry.pid !== undefined) return entry.pid;
    try {
      const pid = Number.parseInt(await readFile(pidFile, 'utf8'), 10);
      entry.pid = Number.isFinite(pid) ? pid : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return entry.pid;
  };
  // Learn the server's pid early, so the exit hook can SIGKILL it.
  void (async () => {
    for (let i = 0; i < 100 && entry.pid === undefined && code === undefined; i++) {
      await serverPid();
      if (entry.pid === undefined) await new Promise((r) => setTimeout(r, 20));
    }
  })();

  return {
    logFile,
    exitCode: () => code,
    async stop() {
      if (code === undefined) {
        child.stdin?.end();
        const timedOut = await Promise.race([
          exited.then(() => false),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 5_000)),
        ]);
        if (timedOut) {
          const pid = await serverPid();
          for (const p of [pid, child.pid]) {
            if (p === undefined) continue;
            try {
              process.kill(p, 'SIGKILL');
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
            }
          }
          await exited;
        }
      } else {
        child.stdin?.end();
      }
      live.delete(entry);
    },
  };
}
