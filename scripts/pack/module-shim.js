// In the packed executable, ferry's own `createRequire(...)` (io/zstd.ts loads
// zstd-napi and its low-level binding that way, on first use) has no file to resolve from, and an
// SEA's require() loads built-ins only. pack.js points ferry's imports of node:module here: the
// modules ferry asks for are bundled, anything else is a mistake of the pack and says so.
// require(), not import: esbuild bundles them as modules evaluated on first call, so the packed
// ferry also starts without loading zstd.
export function createRequire(_from) {
  return (id) => {
    if (id === 'zstd-napi') return require('zstd-napi');
    if (id === 'zstd-napi/binding.js') return require('zstd-napi/binding.js');
    // io/builtins.ts and oci/digest.ts: built-ins loaded on first use (an SEA's require loads built-ins).
    if (id === 'node:crypto') return require('node:crypto');
    if (id === 'node:zlib') return require('node:zlib');
    if (id === 'node:worker_threads') return require('node:worker_threads');
    if (id === 'node:child_process') return require('node:child_process');
    throw new Error(`the packed ferry cannot require("${id}"): add it to scripts/pack/module-shim.js`);
  };
}
