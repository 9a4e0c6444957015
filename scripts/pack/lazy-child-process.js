// commander requires node:child_process when it loads, for executable subcommands (`git-style`
// separate programs), which ferry has none of; with node:net under it that is 6 ms of every start
// of the packed ferry. pack.js gives commander this instead: the module, loaded on first use.
let loaded;
module.exports = new Proxy({}, {
  get(_target, key) {
    loaded ??= require('node:child_process');
    return loaded[key];
  },
});
