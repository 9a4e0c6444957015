/* zstd decompression on a thread of its own: see zstd-thread.c. */
#ifndef FERRY_ZSTD_THREAD_H
#define FERRY_ZSTD_THREAD_H
#include <node_api.h>

/* Adds zstdThreadOpen, zstdThreadInput, zstdThreadBuffer, zstdThreadEnd, zstdThreadClose and zstdThreadsOpen to the addon's exports. */
void register_zstd_thread(napi_env env, napi_value exports);
#endif
