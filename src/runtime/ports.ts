import { UsageError } from '../errors.js';
import type { PortMapping } from './launcher.js';

/**
 * docker's -p [IP:][HOST:]CONTAINER[/tcp|/udp] and -P (every ExposedPorts entry on a port the
 * kernel picks). IPv4 only: the relay binds the host's listeners with AF_INET.
 */
function port(text: string, what: string, spec: string, allowZero: boolean): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || n > 65535 || (n === 0 && !allowZero)) throw new UsageError(`-p ${spec}: ${what} "${text}" is not a port number (1-65535)`);
  return n;
}

export function parsePublish(spec: string): PortMapping {
  const slash = spec.lastIndexOf('/');
  const proto = slash < 0 ? 'tcp' : spec.slice(slash + 1);
  if (proto !== 'tcp' && proto !== 'udp') throw new UsageError(`-p ${spec}: protocol "${proto}" is not tcp or udp`);
  const parts = (slash < 0 ? spec : spec.slice(0, slash)).split(':');
  if (parts.length > 3) throw new UsageError(`-p ${spec}: expected [IP:]HOST:CONTAINER[/tcp|/udp]`, { hint: 'IPv6 host addresses are not supported' });
  const containerPort = port(parts[parts.length - 1]!, 'container port', spec, false);
  const hostPort = parts.length >= 2 && parts[parts.length - 2] !== '' ? port(parts[parts.length - 2]!, 'host port', spec, false) : 0;
  const hostIp = parts.length === 3 ? parts[0]! : '';
  if (hostIp !== '' && !/^(\d{1,3})(\.\d{1,3}){3}$/.test(hostIp)) throw new UsageError(`-p ${spec}: "${hostIp}" is not an IPv4 address`);
  return { protocol: proto, hostIp, hostPort, containerPort };
}

/** -P: the image's ExposedPorts ("80/tcp", "53/udp", "8080") on ports the kernel picks. */
export function exposedPorts(exposed: Record<string, object> | undefined): PortMapping[] {
  return Object.keys(exposed ?? {}).map((key) => {
    const [num = '', proto = 'tcp'] = key.split('/');
    return parsePublish(`${num}/${proto}`);
  });
}

/** "0.0.0.0:18081->80/tcp", docker's PORTS column. */
export function formatPort(p: PortMapping): string {
  return `${p.hostIp === '' ? '0.0.0.0' : p.hostIp}:${p.hostPort}->${p.containerPort}/${p.protocol}`;
}
