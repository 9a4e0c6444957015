import type { Command } from 'commander';
import { FerryError } from '../../errors.js';
import { formatPort } from '../../runtime/ports.js';
import { findContainer } from '../../runtime/state.js';
import { storeFromCommand } from '../store-options.js';
import type { Register } from './index.js';

/** `ferry port CONTAINER [PORT[/PROTO]]`: docker's "80/tcp -> 0.0.0.0:18081" lines. */
export const registerPort: Register = (program) => {
  program
    .command('port')
    .description('list the published ports of a running container')
    .argument('<container>', 'container name or ID')
    .argument('[port]', 'only this container port, e.g. 80 or 53/udp')
    .action(async (container: string, which: string | undefined, _flags: object, cmd: Command) => {
      const store = await storeFromCommand(cmd);
      const info = await findContainer(store.root, container);
      const ports = info.status === 'running' ? info.state?.ports ?? [] : [];
      const [num, proto = 'tcp'] = (which ?? '').split('/');
      const shown = ports.filter((p) => which === undefined || (String(p.containerPort) === num && p.protocol === proto));
      if (which !== undefined && shown.length === 0) {
        throw new FerryError('NOT_FOUND', `container ${info.record.name}: no published port ${num}/${proto}`, { hint: 'ferry port C lists what it publishes' });
      }
      for (const p of shown) process.stdout.write(`${p.containerPort}/${p.protocol} -> ${formatPort(p).split('->')[0]}\n`);
    });
};
