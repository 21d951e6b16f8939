// nftables commands run in-process through libnftables, the library nft itself is built on.
//
// Why native: the provider agent changes its firewall before a new client link comes up, so
// each change sits in a hot-plug's latency. A spawned `nft` costs a process spawn, exec and
// dynamic linking, then nft's cache fetch, per change (6-16 ms measured); libnftables runs the
// same parser and the same transaction from one long-lived context in the agent's process and
// network namespace.
//
// Why async work: a full table load of a thousand clients takes tens of milliseconds, and DHCP
// and DNS share the event loop. A call runs on libuv's thread pool; the JS side (guest/firewall/
// nft.ts) makes calls one at a time, since one nft context must not be used by two threads at
// once. A second call while one runs throws EBUSY.
//
// Why listings can be numeric (NUMERIC): nft prints some values by names it reads from files in
// /etc (device groups from /etc/iproute2/group, protocols from /etc/protocols, ...), so a listing
// compared with what the agent expects would depend on what those files say. Numeric, it does not.
//
// Why listings get a context of their own (ONE_OFF): a context keeps nft's cache between calls,
// and a listing fills it with every element of every set; the next change then paid for
// throwing that away (an element transaction after a listing of a 1000-client table took 8 ms
// instead of 0.6). A one-off context is made for the call and freed after it.
//
// JS API:
//   run(script, flags, callback(code, stdout, stderr))   queue one nft run of `script`
//       flags: STATELESS (-s), JSON (-j), NUMERIC (-n), and ONE_OFF, or'ed. code: 0 on success, 1 on
//       failure (as nft exits); stdout and stderr are what nft would print. Throws {code} if it
//       cannot queue.
//   STATELESS, JSON, NUMERIC, ONE_OFF: the flag values.
// The long-lived context is made on the first run and freed when the environment is torn down.
#define _GNU_SOURCE  // strerrorname_np, in the shared plumbing
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "nft-run"
#include "../../shared/native/napi-plumbing.h"

#include <errno.h>
#if !__has_include(<nftables/libnftables.h>)
#error "libnftables.h is missing: install libnftables-dev (scripts/setup does), then npm run build"
#endif
#include <nftables/libnftables.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>  // memfd_create
#include <unistd.h>

// Not an nft output flag: libnftables' flags stay well below it.
#define ONE_OFF (1u << 30)
// The output flags a caller may ask for; anything else is refused.
// NUMERIC is nft -n (1.0.6): symbols, protocols, priorities and times as numbers.
#define OUTPUT_FLAGS (NFT_CTX_OUTPUT_STATELESS | NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_NUMERIC_ALL)

typedef struct {
  napi_async_work work;
  napi_ref callback;
  unsigned flags;
  char *script;
  // Filled on the worker thread: the return code and copies of the buffered output.
  int code;
  char *out;
  char *err;
} nft_call;

static struct nft_ctx *context;
static int busy;

static void free_context(void *unused) {
  (void)unused;
  // A call still running on a worker thread keeps its context: the process is exiting anyway.
  if (context != NULL && !busy) nft_ctx_free(context);
  context = NULL;
}

// A context whose output and errors are kept in memory for the caller instead of printed; NULL
// when out of memory.
static struct nft_ctx *new_context(void) {
  struct nft_ctx *made = nft_ctx_new(NFT_CTX_DEFAULT);
  if (made == NULL) return NULL;
  if (nft_ctx_buffer_output(made) != 0 || nft_ctx_buffer_error(made) != 0) {
    nft_ctx_free(made);
    return NULL;
  }
  return made;
}

static int open_context(napi_env env) {
  if (context != NULL) return 1;
  context = new_context();
  if (context == NULL) {
    throw_errno(env, ENOMEM, ADDON_NAME ": making an nft context");
    return 0;
  }
  napi_add_env_cleanup_hook(env, free_context, NULL);
  return 1;
}

static void free_call(napi_env env, nft_call *call) {
  if (call->callback != NULL) napi_delete_reference(env, call->callback);
  if (call->work != NULL) napi_delete_async_work(env, call->work);
  free(call->script);
  free(call->out);
  free(call->err);
  free(call);
}

// Run a script of several lines as a file, as `nft -f` does. Why: libnftables 1.0.6 quotes the
// first line of a buffer in every error message, whatever line the error is on; read from a file
// (an in-memory one here) it names the line and quotes it. -1 if there is no such file to be had
// (no /proc, say): the caller runs the buffer instead.
static int run_as_file(struct nft_ctx *ctx, const char *script) {
  int fd = memfd_create("nft-script", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t length = strlen(script);
  for (size_t written = 0; written < length;) {
    ssize_t wrote = write(fd, script + written, length - written);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      close(fd);
      return -1;
    }
    written += (size_t)wrote;
  }
  char path[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int code = access(path, R_OK) == 0 ? (nft_run_cmd_from_filename(ctx, path) == 0 ? 0 : 1) : -1;
  close(fd);
  return code;
}

// Worker thread: the only place a context is used while a call is queued. Leaves out or err
// NULL when out of memory.
static void execute(napi_env env, void *data) {
  (void)env;
  nft_call *call = data;
  struct nft_ctx *ctx = (call->flags & ONE_OFF) != 0 ? new_context() : context;
  if (ctx == NULL) return;
  nft_ctx_output_set_flags(ctx, call->flags & OUTPUT_FLAGS);
  const char *newline = strchr(call->script, '\n');
  int several_lines = newline != NULL && newline[1] != '\0';
  call->code = several_lines ? run_as_file(ctx, call->script) : -1;
  if (call->code < 0) call->code = nft_run_cmd_from_buffer(ctx, call->script) == 0 ? 0 : 1;
  // Reading a buffer also rewinds it for the next call, so both are read every time.
  call->out = strdup(nft_ctx_get_output_buffer(ctx));
  call->err = strdup(nft_ctx_get_error_buffer(ctx));
  if (ctx != context) nft_ctx_free(ctx);
}

static void complete(napi_env env, napi_status status, void *data) {
  nft_call *call = data;
  busy = 0;
  napi_value argv[3];
  napi_value callback, global;
  if (status == napi_ok && (call->out == NULL || call->err == NULL)) status = napi_generic_failure;
  if (status == napi_ok) {
    napi_create_int32(env, call->code, &argv[0]);
    napi_create_string_utf8(env, call->out, NAPI_AUTO_LENGTH, &argv[1]);
    napi_create_string_utf8(env, call->err, NAPI_AUTO_LENGTH, &argv[2]);
  } else {
    // Cancelled, or out of memory: an nft-like failure, said in stderr.
    napi_create_int32(env, 1, &argv[0]);
    napi_create_string_utf8(env, "", 0, &argv[1]);
    napi_create_string_utf8(env, ADDON_NAME ": the call did not complete (out of memory?)", NAPI_AUTO_LENGTH, &argv[2]);
  }
  if (napi_get_reference_value(env, call->callback, &callback) == napi_ok && napi_get_global(env, &global) == napi_ok) {
    napi_call_function(env, global, callback, 3, argv, NULL);
  }
  free_call(env, call);
}

static napi_value run(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  size_t length = 0;
  uint32_t flags = 0;
  napi_valuetype type;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &length) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the script must be a string");
    return NULL;
  }
  if (napi_get_value_uint32(env, argv[1], &flags) != napi_ok || (flags & ~(uint32_t)(OUTPUT_FLAGS | ONE_OFF)) != 0) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": flags must be STATELESS, JSON, NUMERIC and/or ONE_OFF");
    return NULL;
  }
  if (napi_typeof(env, argv[2], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the callback must be a function");
    return NULL;
  }
  if (busy) return throw_errno(env, EBUSY, ADDON_NAME ": a call is still running (calls must be made one at a time)");
  if (!open_context(env)) return NULL;

  nft_call *call = calloc(1, sizeof *call);
  if (call == NULL) return throw_errno(env, ENOMEM, ADDON_NAME ": run");
  call->flags = flags;
  call->script = malloc(length + 1);
  if (call->script == NULL) {
    free_call(env, call);
    return throw_errno(env, ENOMEM, ADDON_NAME ": run");
  }
  napi_value name;
  if (napi_get_value_string_utf8(env, argv[0], call->script, length + 1, &length) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &call->callback) != napi_ok ||
      napi_create_string_utf8(env, "nft-run", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, call, &call->work) != napi_ok ||
      napi_queue_async_work(env, call->work) != napi_ok) {
    free_call(env, call);
    return throw_errno(env, EIO, ADDON_NAME ": cannot queue the call");
  }
  busy = 1;
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("run", run),
  };
  if (EXPORT_FUNCTIONS(env, exports, functions) != napi_ok) return NULL;
  if (set_number(env, exports, "STATELESS", NFT_CTX_OUTPUT_STATELESS) == NULL) return NULL;
  if (set_number(env, exports, "ONE_OFF", (int)ONE_OFF) == NULL) return NULL;
  if (set_number(env, exports, "NUMERIC", NFT_CTX_OUTPUT_NUMERIC_ALL) == NULL) return NULL;
  return set_number(env, exports, "JSON", NFT_CTX_OUTPUT_JSON);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
