// In the packed executable, ferry's own `createRequire(import.meta.url)` (io/zstd.ts loads
// zstd-napi's low-level binding that way) has no file to resolve from, and an SEA's require()
// loads built-ins only. pack.js points ferry's imports of node:module here: the one module ferry
// asks for is bundled, anything else is a mistake of the pack and says so.
import zstdBinding from 'zstd-napi/binding.js';

export function createRequire(_from) {
  return (id) => {
    if (id === 'zstd-napi/binding.js') return zstdBinding;
    throw new Error(`the packed ferry cannot require("${id}"): add it to scripts/pack/module-shim.js`);
  };
}
