export * from './errors.js';
export * from './oci/index.js';
