/*
 * zstd decompression on a thread of its own (src/io/zstd.ts, zstdDecompressStreamOnThread): a
 * bundle's layers are unpacked on Node's thread while this one decodes the next bytes. A Node
 * worker thread did this before, at the price of a second JavaScript environment (~20 MB more
 * peak RSS for `ferry import`, issue 16); a plain thread costs its stack.
 *
 * The caller owns every buffer. It hands over input chunks (decoded in order) and empty output
 * buffers; each is referenced (so the garbage collector keeps it) until it comes back through the
 * callback: an output buffer once filled, or when no input waits (the reader may need those
 * bytes now); an input chunk once consumed. The caller must not touch a buffer it handed over
 * until then. Callback, on Node's thread: (kind, buffer, length, framesEnded, inFrame, message),
 * kind 0 output, 1 consumed, 2 ended (all input decoded after end()), 3 error.
 *
 * zstd is compiled in from zstd-napi's copy of its sources (binding.gyp): the same version that
 * ferry's other zstd code uses, and nothing to find on the host.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <node_api.h>
#include <zstd.h>

#include "napi-args.h"
#include "zstd-thread.h"

/* More buffers than the caller ever has in flight (src/io/zstd.ts: 4 each way). */
#define QUEUE_MAX 32

enum { EV_OUTPUT = 0, EV_CONSUMED = 1, EV_ENDED = 2, EV_ERROR = 3 };

typedef struct {
  uint8_t *data;
  size_t length;
  napi_ref ref;
} held_buffer;

typedef struct {
  int kind;
  napi_ref ref;
  size_t length;
  uint32_t frames_ended;
  int in_frame;
  char message[160];
} event;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Inputs: a FIFO ring. Empty outputs: a stack. Both filled on Node's thread. */
  held_buffer inputs[QUEUE_MAX];
  int in_head, in_count;
  held_buffer outputs[QUEUE_MAX];
  int out_count;
  /* What the thread is working on (here, not on its stack, so close() can release them). */
  held_buffer in, out;
  int has_in, has_out;
  size_t in_pos, filled;
  int ending, stopping;
  uint32_t frames_ended;
  int in_frame;
  ZSTD_DCtx *dctx;
  napi_threadsafe_function tsfn;
  /* Made at open, for telling that an event could not be made. */
  event *reserve;
  pthread_t thread;
  int closed;
  /* The handle's finalizer and the callback's: the last of the two frees this. */
  int owners;
  napi_env env;
} decoder;

/* Decoders opened and not yet closed (a test checks that none outlives its stream). */
static int open_decoders;

static void release_owner(decoder *d) {
  if (--d->owners > 0) return;
  free(d->reserve);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cv);
  free(d);
}

/*
 * Under d->mu. The queue has no limit (its size is bounded by the buffers in flight); a closing
 * function refuses, and the event's reference then goes with the environment. Returns -1 when no
 * memory was left for the event: the thread then reports that instead, with the event kept at
 * open for it, and stops (what it holds is released at close).
 */
static int emit(decoder *d, int kind, napi_ref ref, size_t length, const char *message) {
  event *e = calloc(1, sizeof *e);
  int failed = e == NULL;
  if (failed) {
    e = d->reserve;
    d->reserve = NULL;
    if (e == NULL) return -1;
    kind = EV_ERROR;
    ref = NULL;
    message = "out of memory";
  }
  e->kind = kind;
  e->ref = ref;
  e->length = length;
  e->frames_ended = d->frames_ended;
  e->in_frame = d->in_frame;
  if (message != NULL) snprintf(e->message, sizeof e->message, "%s", message);
  if (napi_call_threadsafe_function(d->tsfn, e, napi_tsfn_nonblocking) != napi_ok) free(e);
  return failed ? -1 : 0;
}

static void *decode_loop(void *arg) {
  decoder *d = arg;
  pthread_mutex_lock(&d->mu);
  while (!d->stopping) {
    if (!d->has_in && d->in_count > 0) {
      d->in = d->inputs[d->in_head];
      d->in_head = (d->in_head + 1) % QUEUE_MAX;
      d->in_count--;
      d->in_pos = 0;
      d->has_in = 1;
    }
    if (!d->has_in) {
      if (d->ending) {
        d->ending = 0;
        if (emit(d, EV_ENDED, NULL, 0, NULL) != 0) break;
      }
      pthread_cond_wait(&d->cv, &d->mu);
      continue;
    }
    if (!d->has_out && d->out_count > 0) {
      d->out = d->outputs[--d->out_count];
      d->filled = 0;
      d->has_out = 1;
    }
    if (!d->has_out) {
      pthread_cond_wait(&d->cv, &d->mu);
      continue;
    }
    ZSTD_inBuffer in = {d->in.data, d->in.length, d->in_pos};
    ZSTD_outBuffer out = {d->out.data, d->out.length, d->filled};
    size_t room = d->out.length - d->filled;
    /* The buffers are this thread's until handed back: decode without the lock. */
    pthread_mutex_unlock(&d->mu);
    size_t ret = ZSTD_decompressStream(d->dctx, &out, &in);
    pthread_mutex_lock(&d->mu);
    if (ZSTD_isError(ret)) {
      emit(d, EV_ERROR, NULL, 0, ZSTD_getErrorName(ret));
      break;
    }
    size_t produced = out.pos - d->filled;
    d->filled = out.pos;
    d->in_pos = in.pos;
    if (ret == 0) d->frames_ended++;
    /* All of the chunk is in, and all its output out (the decoder did not fill the room it had). */
    int chunk_done = d->in_pos == d->in.length && (produced < room || ret == 0);
    if (d->filled == d->out.length || (chunk_done && d->in_count == 0 && d->filled > 0)) {
      if (emit(d, EV_OUTPUT, d->out.ref, d->filled, NULL) != 0) break;
      d->has_out = 0;
    }
    if (chunk_done) {
      d->in_frame = ret != 0;
      if (emit(d, EV_CONSUMED, d->in.ref, 0, NULL) != 0) break;
      d->has_in = 0;
    }
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* On Node's thread: hand one event to the JavaScript callback, then drop the buffer's reference. */
static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  event *e = data;
  if (env != NULL && callback != NULL) {
    napi_value argv[6], undefined;
    napi_get_undefined(env, &undefined);
    napi_create_int32(env, e->kind, &argv[0]);
    argv[1] = undefined;
    if (e->ref != NULL) napi_get_reference_value(env, e->ref, &argv[1]);
    if (argv[1] == NULL) argv[1] = undefined;
    napi_create_double(env, (double)e->length, &argv[2]);
    napi_create_uint32(env, e->frames_ended, &argv[3]);
    napi_get_boolean(env, e->in_frame != 0, &argv[4]);
    if (e->message[0] != 0) napi_create_string_utf8(env, e->message, NAPI_AUTO_LENGTH, &argv[5]);
    else argv[5] = undefined;
    napi_call_function(env, undefined, callback, 6, argv, NULL);
  }
  if (env != NULL && e->ref != NULL) napi_delete_reference(env, e->ref);
  free(e);
}

static void unref_held(napi_env env, held_buffer *b) {
  if (b->ref != NULL) napi_delete_reference(env, b->ref);
  b->ref = NULL;
}

/* Stop and join the thread, release what it held, let the callback go. Node's thread only. */
static void close_decoder(napi_env env, decoder *d) {
  if (d->closed) return;
  d->closed = 1;
  pthread_mutex_lock(&d->mu);
  d->stopping = 1;
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
  pthread_join(d->thread, NULL);
  __atomic_sub_fetch(&open_decoders, 1, __ATOMIC_SEQ_CST);
  if (d->has_in) unref_held(env, &d->in);
  if (d->has_out) unref_held(env, &d->out);
  for (int i = 0; i < d->in_count; i++) unref_held(env, &d->inputs[(d->in_head + i) % QUEUE_MAX]);
  for (int i = 0; i < d->out_count; i++) unref_held(env, &d->outputs[i]);
  d->in_count = d->out_count = d->has_in = d->has_out = 0;
  ZSTD_freeDCtx(d->dctx);
  d->dctx = NULL;
  /* Events already queued still reach call_js, which drops their references. */
  napi_release_threadsafe_function(d->tsfn, napi_tsfn_release);
}

static void cleanup_hook(void *arg) {
  decoder *d = arg;
  close_decoder(d->env, d);
}

/* Close from JavaScript (a call, or the handle's finalizer): the environment's hook is not needed any more. */
static void close_from_js(napi_env env, decoder *d) {
  if (d->closed) return;
  napi_remove_env_cleanup_hook(env, cleanup_hook, d);
  close_decoder(env, d);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  release_owner((decoder *)data);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  decoder *d = data;
  close_from_js(env, d);
  release_owner(d);
}

static decoder *get_decoder(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    throw_type(env, "not a zstd decoder");
    return NULL;
  }
  decoder *d = data;
  if (d->closed) {
    napi_throw_error(env, "ERR_INVALID_STATE", "zstd decoder is closed");
    return NULL;
  }
  return d;
}

/* zstdThreadOpen(windowLogMax, callback) -> handle. */
static napi_value ZstdThreadOpen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) != 0) return NULL;
  int32_t window_log_max;
  napi_valuetype type;
  if (napi_get_value_int32(env, argv[0], &window_log_max) != napi_ok) return throw_type(env, "windowLogMax must be a number");
  napi_typeof(env, argv[1], &type);
  if (type != napi_function) return throw_type(env, "callback must be a function");
  decoder *d = calloc(1, sizeof *d);
  if (d == NULL) {
    napi_throw_error(env, "ENOMEM", "zstd decoder: out of memory");
    return NULL;
  }
  d->env = env;
  d->owners = 2;
  d->reserve = calloc(1, sizeof *d->reserve);
  d->dctx = ZSTD_createDCtx();
  int no_memory = d->reserve == NULL || d->dctx == NULL;
  if (no_memory || ZSTD_isError(ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax, window_log_max))) {
    if (d->dctx != NULL) ZSTD_freeDCtx(d->dctx);
    free(d->reserve);
    free(d);
    if (no_memory) napi_throw_error(env, "ENOMEM", "zstd decoder: out of memory");
    else napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "zstd decoder: window log out of zstd's range");
    return NULL;
  }
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
  napi_value name;
  napi_create_string_utf8(env, "ferry zstd decoder", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, d, tsfn_finalize, NULL, call_js, &d->tsfn) != napi_ok) {
    ZSTD_freeDCtx(d->dctx);
    d->owners = 1;
    release_owner(d);
    napi_throw_error(env, NULL, "zstd decoder: cannot make its callback");
    return NULL;
  }
  int err = pthread_create(&d->thread, NULL, decode_loop, d);
  if (err != 0) {
    ZSTD_freeDCtx(d->dctx);
    d->closed = 1;
    d->owners = 1;
    napi_release_threadsafe_function(d->tsfn, napi_tsfn_abort);
    napi_throw_error(env, "EAGAIN", "zstd decoder: cannot start its thread");
    return NULL;
  }
  __atomic_add_fetch(&open_decoders, 1, __ATOMIC_SEQ_CST);
  napi_add_env_cleanup_hook(env, cleanup_hook, d);
  napi_value handle;
  napi_create_external(env, d, handle_finalize, NULL, &handle);
  return handle;
}

/* Hold a Buffer until the thread hands it back. 0, or -1 with an exception pending. */
static int hold(napi_env env, napi_value value, held_buffer *out) {
  bool is_buffer = false;
  napi_is_buffer(env, value, &is_buffer);
  if (!is_buffer) {
    throw_type(env, "expected a Buffer");
    return -1;
  }
  void *data;
  size_t length;
  napi_get_buffer_info(env, value, &data, &length);
  if (length == 0) {
    throw_type(env, "expected a Buffer of at least one byte");
    return -1;
  }
  out->data = data;
  out->length = length;
  napi_create_reference(env, value, 1, &out->ref);
  return 0;
}

/* The arguments of a call on a decoder: `want` of them, the first the handle. NULL with an exception pending. */
static decoder *decoder_call(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  if (get_args(env, info, want, argv) != 0) return NULL;
  return get_decoder(env, argv[0]);
}

/* Hand the thread a chunk of input or an empty output buffer, held until its event. */
static napi_value hand_over(napi_env env, napi_callback_info info, int input) {
  napi_value argv[2];
  decoder *d = decoder_call(env, info, 2, argv);
  if (d == NULL) return NULL;
  pthread_mutex_lock(&d->mu);
  int full = (input ? d->in_count : d->out_count) >= QUEUE_MAX;
  pthread_mutex_unlock(&d->mu);
  if (full) return throw_type(env, input ? "zstd decoder: too many inputs in flight" : "zstd decoder: too many buffers in flight");
  held_buffer b;
  if (hold(env, argv[1], &b) != 0) return NULL;
  pthread_mutex_lock(&d->mu);
  if (input) {
    d->inputs[(d->in_head + d->in_count) % QUEUE_MAX] = b;
    d->in_count++;
  } else {
    d->outputs[d->out_count++] = b;
  }
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* zstdThreadInput(handle, chunk): the next compressed bytes. */
static napi_value ZstdThreadInput(napi_env env, napi_callback_info info) {
  return hand_over(env, info, 1);
}

/* zstdThreadBuffer(handle, buffer): an empty buffer to decode into. */
static napi_value ZstdThreadBuffer(napi_env env, napi_callback_info info) {
  return hand_over(env, info, 0);
}

/* zstdThreadEnd(handle): no more input; 'ended' follows once all of it is decoded. */
static napi_value ZstdThreadEnd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  decoder *d = decoder_call(env, info, 1, argv);
  if (d == NULL) return NULL;
  pthread_mutex_lock(&d->mu);
  d->ending = 1;
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* zstdThreadClose(handle): stop the thread (joined here) and free the decoder; idempotent. */
static napi_value ZstdThreadClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  void *data = NULL;
  if (napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) return throw_type(env, "not a zstd decoder");
  close_from_js(env, (decoder *)data);
  return NULL;
}

static napi_value ZstdThreadsOpen(napi_env env, napi_callback_info info) {
  napi_value count;
  napi_create_int32(env, __atomic_load_n(&open_decoders, __ATOMIC_SEQ_CST), &count);
  return count;
}

void register_zstd_thread(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
    {"zstdThreadOpen", NULL, ZstdThreadOpen, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zstdThreadInput", NULL, ZstdThreadInput, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zstdThreadBuffer", NULL, ZstdThreadBuffer, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zstdThreadEnd", NULL, ZstdThreadEnd, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zstdThreadClose", NULL, ZstdThreadClose, NULL, NULL, NULL, napi_enumerable, NULL},
    {"zstdThreadsOpen", NULL, ZstdThreadsOpen, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
}
