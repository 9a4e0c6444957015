import { writeKeyPair } from '../../bundle/sign.js';
import type { Register } from './index.js';

interface KeygenFlags {
  output: string;
}

/** `ferry keygen [-o NAME]`: NAME.pem (private, 0600) and NAME.pub.pem, ed25519, as openssl writes them. */
export const registerKeygen: Register = (program) => {
  program
    .command('keygen')
    .description('write an ed25519 key pair for signing bundles: NAME.pem (private, 0600) and NAME.pub.pem')
    .option('-o, --output <name>', 'file name without extension', 'ferry-bundle')
    .action(async (flags: KeygenFlags) => {
      const files = await writeKeyPair(flags.output);
      process.stdout.write(`${files.privateKey}  private key: keep it secret, sign with \`ferry export --sign ${files.privateKey}\`\n`);
      process.stdout.write(`${files.publicKey}  public key: give it to the receiving side, check with \`ferry verify --key ${files.publicKey}\`\n`);
    });
};
