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
    // io/builtins.ts and oci/digest.ts: built-ins loaded on first use (an SEA's require loads
    // built-ins only, so any node: id is one).
    if (id.startsWith('node:')) return require(id);
    throw new Error(`the packed ferry cannot require("${id}"): add it to scripts/pack/module-shim.js`);
  };
}
