export * from './descriptor.js';
export * from './digest.js';
export * from './image.js';
export * from './manifest.js';
export * from './media-types.js';
export * from './platform.js';
export * from './reference.js';
