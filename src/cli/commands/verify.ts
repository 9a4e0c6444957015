import { loadPublicKey } from '../../bundle/sign.js';
import { formatBytes } from '../../bundle/size.js';
import { verifyBundle, type VerifyReport } from '../../bundle/verify-bundle.js';
import type { Register } from './index.js';

interface VerifyFlags {
  key?: string;
  json?: boolean;
}

const SIGNATURE_TEXT: Record<VerifyReport['signature'], string> = {
  verified: 'signature verified',
  invalid: 'signature INVALID',
  unsigned: 'unsigned',
  'not-checked': 'signed (not checked: no --key)',
};

/** `ferry verify [--key PUB.pem] BUNDLE`: volumes, blob digests, completeness, signature; exit 1 on any problem. */
export const registerVerify: Register = (program) => {
  program
    .command('verify')
    .description('verify a bundle: volumes, blob digests, completeness, signature')
    .argument('<bundle>', 'bundle file, base name of its volumes, its first volume (b.tar.zst.001), or - for stdin')
    .option('--key <pub.pem>', 'require a valid signature by this ed25519 public key')
    .option('--json', 'print the report as JSON')
    .action(async (bundle: string, flags: VerifyFlags) => {
      const publicKey = flags.key === undefined ? undefined : await loadPublicKey(flags.key);
      const report = await verifyBundle(bundle, publicKey === undefined ? {} : { publicKey });
      if (flags.json === true) {
        const { header: _header, ...rest } = report;
        process.stdout.write(`${JSON.stringify(rest, null, 2)}\n`);
      } else if (report.ok) {
        const volumes = report.volumes > 1 ? `${report.volumes} volumes${report.volumeChecksums ? ' match their .sha256' : ''}, ` : '';
        const images = report.header?.images.length ?? 0;
        const required = report.header?.requires.length ?? 0;
        const delta = required > 0 ? ` (a delta: requires ${required} layer${required === 1 ? '' : 's'} on the target)` : '';
        process.stdout.write(
          `${bundle}: OK: ${volumes}${report.blobsVerified} blobs (${formatBytes(report.bytesVerified)}) match their digests, ${images} image${images === 1 ? '' : 's'} complete${delta}, ${SIGNATURE_TEXT[report.signature]}\n`,
        );
        for (const t of report.tools) {
          const covered = report.signature === 'verified' ? ', covered by the signature' : '';
          process.stdout.write(t.state === 'verified' ? `${t.path}: OK: sha256 matches ferry-bundle.json${covered}\n` : `${t.path}: not checked (the bundle came from stdin)\n`);
        }
      } else {
        for (const p of report.problems) process.stderr.write(`ferry: ${p}\n`);
        for (const h of report.hints) process.stderr.write(`hint: ${h}\n`);
      }
      if (!report.ok) process.exitCode = 1;
    });
};
