import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';

/**
 * The outbound side of `--network private`: slirp4netns (a user-mode TCP/IP stack, podman's
 * rootless network) gives the container a tap device with a route out and a DNS forwarder, and
 * the launcher runs it for as long as the container runs. It adds no firewall rule, route or link
 * to the host, so a firewall reload changes nothing and `rm` leaves nothing behind.
 */

/** slirp's fixed addresses (its default 10.0.2.0/24): the container, the gateway, the DNS forwarder. */
export const SLIRP_DNS = '10.0.2.3';

/**
 * The slirp4netns executable, looked up in the system's directories only: ferry runs as root and
 * must not run whatever a caller's PATH names.
 */
const SLIRP_DIRS = ['/usr/local/bin', '/usr/bin', '/bin', '/usr/local/sbin', '/usr/sbin', '/sbin'];

let found: string | null | undefined;

export function findSlirp4netns(): string | undefined {
  if (found === undefined) {
    found = null;
    for (const dir of SLIRP_DIRS) {
      const path = join(dir, 'slirp4netns');
      try {
        accessSync(path, constants.X_OK);
        found = path;
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
      }
    }
  }
  return found ?? undefined;
}

/**
 * resolv.conf of a private network with outbound traffic: slirp's forwarder (it asks the host's
 * resolvers, loopback ones like systemd-resolved included), and the host's search and options lines.
 */
export function privateResolvConf(hostResolv: string): string {
  const kept = hostResolv.split('\n').filter((l) => /^\s*(search|domain|options)\s/.test(l));
  return ['# ferry: --network private (slirp4netns forwards to the host\'s resolvers)', `nameserver ${SLIRP_DNS}`, ...kept, ''].join('\n');
}
