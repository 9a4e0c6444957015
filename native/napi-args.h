/* Argument checks shared by the addon's C files (ferry_native.c, zstd-thread.c). */
#ifndef FERRY_NAPI_ARGS_H
#define FERRY_NAPI_ARGS_H
#include <node_api.h>

/* Throw a TypeError; returns NULL for `return throw_type(...)`. */
static inline napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return NULL;
}

/* The first `want` arguments into argv: 0, or -1 with a TypeError pending when fewer were given. */
static inline int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    throw_type(env, "too few arguments");
    return -1;
  }
  return 0;
}
#endif
