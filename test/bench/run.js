// `npm run bench`: compile test/bench (TypeScript, its own tsconfig, output in build/bench/) and run it.
// Kept out of `npm test`: it takes tens of minutes, needs root, and measures rather than checks.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });
await import(join(here, '..', '..', 'build', 'bench', 'bench', 'main.js'));
