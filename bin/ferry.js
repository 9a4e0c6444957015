#!/usr/bin/env node
import * as nodeModule from 'node:module';

// V8's code cache for ferry's modules (Node >= 22.1; in the OS temp dir unless $NODE_COMPILE_CACHE
// says otherwise): later starts skip most compiling. Absent on Node 20, which starts as before.
nodeModule.enableCompileCache?.();
// Imported after that call, so that it covers them; FERRY_TIMING=1 marks when Node got here.
const { mark } = await import('../dist/io/timing.js');
mark('node');
const { runAndExit } = await import('../dist/cli/main.js');
await runAndExit(process.argv.slice(2));
