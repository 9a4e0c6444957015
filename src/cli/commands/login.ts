import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import { configKey, normalizeRegistryName, removeCredentials, storeCredentials } from '../../registry/docker-config.js';
import { withRegistryClient } from '../registry-options.js';
import type { Register } from './index.js';

interface LoginFlags {
  username?: string;
  passwordStdin?: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * `ferry login [REGISTRY] -u USER --password-stdin`: check the credentials against the registry,
 * then file them in docker's config.json (`auths[REGISTRY].auth`) where docker and ferry find them.
 */
export const registerLogin: Register = (program) => {
  program
    .command('login')
    .description("log in to a registry: check the credentials, then keep them in docker's config.json")
    .argument('[registry]', 'registry host[:port]; docker.io is Docker Hub', 'docker.io')
    .option('-u, --username <user>', 'user name')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (registryArg: string, flags: LoginFlags, command: Command) => {
      if (flags.username === undefined || flags.username === '') {
        throw new UsageError('login: a user name is needed (-u USER)', { hint: 'echo "$PASSWORD" | ferry login REGISTRY -u USER --password-stdin' });
      }
      if (flags.passwordStdin !== true) {
        throw new UsageError('login: give the password on standard input with --password-stdin', {
          hint: 'echo "$PASSWORD" | ferry login REGISTRY -u USER --password-stdin (a password on the command line would be seen by other users)',
        });
      }
      // As docker does: one trailing newline (and CR) is not part of the password.
      const password = (await readStdin()).replace(/\r?\n$/, '');
      if (password === '') throw new UsageError('login: the password read from standard input is empty');
      const registry = normalizeRegistryName(registryArg);
      const creds = { username: flags.username, password };
      await withRegistryClient(command, (client) => client.verifyCredentials(registry, creds));
      const path = await storeCredentials(registry, creds);
      process.stdout.write(`Login Succeeded: ${configKey(registry)} in ${path}\n`);
    });
};

/** `ferry logout [REGISTRY]`: forget the registry's entry in docker's config.json. */
export const registerLogout: Register = (program) => {
  program
    .command('logout')
    .description("log out of a registry: remove its credentials from docker's config.json")
    .argument('[registry]', 'registry host[:port]; docker.io is Docker Hub', 'docker.io')
    .action(async (registryArg: string) => {
      const registry = normalizeRegistryName(registryArg);
      const removed = await removeCredentials(registry);
      process.stdout.write(removed ? `Removed login credentials for ${configKey(registry)}\n` : `Not logged in to ${configKey(registry)}\n`);
    });
};
