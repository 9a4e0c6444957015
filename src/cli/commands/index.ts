import type { Command } from 'commander';
import { FerryError } from '../../errors.js';
import { registerInspect } from './inspect.js';
import { registerKeygen } from './keygen.js';
import { registerExport } from './export.js';
import { registerLs } from './ls.js';
import { registerVerify } from './verify.js';
import { registerFsck } from './fsck.js';
import { registerImages } from './images.js';
import { registerImport } from './import.js';
import { registerInventory } from './inventory.js';
import { registerPrune } from './prune.js';
import { registerRmi } from './rmi.js';
import { registerTag } from './tag.js';
import { registerLogin, registerLogout } from './login.js';
import { registerPush } from './push.js';
import { registerSave } from './save.js';
import { registerServe } from './serve.js';
import { registerRun } from './run.js';
import { registerCommit } from './commit.js';
import { registerDiff } from './diff.js';
import { registerExec } from './exec.js';
import { registerLogs } from './logs.js';
import { registerPs } from './ps.js';
import { registerRm } from './rm.js';
import { registerKill, registerStop } from './stop.js';

/** A command module adds its subcommand to the program. */
export type Register = (program: Command) => void;

/** Commands of DESIGN not built yet: listed in --help, exit 1 with a clear message until they land. */
const PLANNED: Array<[name: string, summary: string, lands: string]> = [
];

const BUILT: Register[] = [registerExport, registerInspect, registerLogin, registerLogout, registerLs, registerVerify, registerKeygen, registerImport, registerImages, registerTag, registerRmi, registerPrune, registerFsck, registerInventory, registerRun, registerPs, registerStop, registerKill, registerRm, registerLogs, registerExec, registerDiff, registerCommit, registerPush, registerSave, registerServe];

function planned(name: string, summary: string, lands: string): Register {
  return (program) => {
    program
      .command(name)
      .description(`${summary} (not built yet)`)
      .allowUnknownOption(true)
      .allowExcessArguments(true)
      .action(() => {
        throw new FerryError('NOT_IMPLEMENTED', `${name}: not built yet`, { hint: `this command lands with the ${lands} work` });
      });
  };
}

/** Every command, built or planned, in the order --help lists them. */
export const COMMANDS: Register[] = [...BUILT, ...PLANNED.map(([n, s, l]) => planned(n, s, l))];
