import type { Command } from 'commander';
import { runDoctor, type CheckStatus } from '../../runtime/doctor.js';
import { resolveStoreRoot } from '../../store/index.js';
import type { Register } from './index.js';

const MARK: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };

/** `ferry doctor [--json]`: what this host lacks before a run, with fixes; exit 1 when containers cannot run. */
export const registerDoctor: Register = (program) => {
  program
    .command('doctor')
    .description('check this host for running containers: root, kernel, overlayfs on the store, namespaces, cgroups, space, noexec, store, native parts')
    .option('--json', 'print the report as JSON')
    .action(async (flags: { json?: boolean }, command: Command) => {
      const { root } = command.optsWithGlobals<{ root?: string }>();
      const report = await runDoctor({ storeRoot: resolveStoreRoot(root === undefined ? {} : { root }) });
      if (flags.json === true) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else {
        for (const c of report.checks) {
          process.stdout.write(`${MARK[c.status]}  ${c.name.padEnd(10)} ${c.detail}\n`);
          if (c.fix !== undefined) process.stdout.write(`      ${''.padEnd(10)} fix: ${c.fix}\n`);
        }
        process.stdout.write(report.ok ? 'ferry can run containers on this host\n' : 'ferry cannot run containers on this host until the FAIL lines are fixed\n');
      }
      if (!report.ok) process.exitCode = 1;
    });
};
