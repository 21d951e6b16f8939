// N-API plumbing shared by the project's addons (guest/native/udp-batch.c, guest/native/rtnl-events.c, guest/native/dhcp-filter.c,
// guest/native/nft-run.c, guest/native/conntrack-purge.c, host/native/rtnl.c, host/native/tap-fd.c,
// host/native/state-lock.c).
// The including file defines ADDON_NAME (it prefixes messages) and includes <node_api.h> first.
// (Marked unused: an addon need not call every helper.)
#ifndef SPECTRUM_NAPI_PLUMBING_H
#define SPECTRUM_NAPI_PLUMBING_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

// Throw an Error whose `code` is the errno's name (EEXIST, ...), as Node's own errors carry it.
__attribute__((unused)) static napi_value throw_errno(napi_env env, int error, const char *what) {
  char message[320];
  snprintf(message, sizeof message, "%s: %s", what, strerror(error));
  const char *name = strerrorname_np(error);
  char fallback[16];
  snprintf(fallback, sizeof fallback, "E%d", error);
  napi_value code, text, exception;
  napi_create_string_utf8(env, name != NULL ? name : fallback, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &exception);
  napi_set_named_property(env, exception, "code", code);
  napi_throw(env, exception);
  return NULL;
}

// The first `want` arguments of a call; 0 (with a TypeError thrown) when there are fewer.
__attribute__((unused)) static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": missing arguments");
    return 0;
  }
  return 1;
}

// Set object[name] to the number value; NULL (an exception pending) when that fails.
__attribute__((unused)) static napi_value set_number(napi_env env, napi_value object, const char *name, int value) {
  napi_value number;
  if (napi_create_int32(env, value, &number) != napi_ok) return NULL;
  if (napi_set_named_property(env, object, name, number) != napi_ok) return NULL;
  return object;
}

// Call a JS callback from a libuv callback (napi_make_callback: microtasks run afterwards), `this`
// the global object. An exception the callback throws would stay pending and come out of the next
// unrelated call into the addon: it goes to 'uncaughtException' instead, as any other in Node.
__attribute__((unused)) static void make_callback(napi_env env, napi_async_context context, napi_value callback, size_t argc, const napi_value *argv) {
  napi_value receiver, result;
  napi_get_global(env, &receiver);  // make_callback wants an object as `this`
  napi_status called = napi_make_callback(env, context, receiver, callback, argc, argv, &result);
  bool pending = false;
  if (called == napi_pending_exception || (napi_is_exception_pending(env, &pending) == napi_ok && pending)) {
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
  }
}

// Copy a JS string into `buffer` (`size` bytes) whole: 1 where it is a string whose UTF-8 fits
// with its terminator and holds no NUL, else 0 (nothing thrown). The whole length is asked first:
// a copy cut short stops at a whole character, so the length copied alone does not tell a cut
// (a path or name cut short would name another file or device); and C would read a string with a
// NUL inside only up to it.
__attribute__((unused)) static int whole_string(napi_env env, napi_value value, char *buffer, size_t size) {
  size_t needed = 0, copied = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &needed) != napi_ok || needed >= size) return 0;
  if (napi_get_value_string_utf8(env, value, buffer, size, &copied) != napi_ok || copied != needed) return 0;
  return strlen(buffer) == copied;
}

// One entry of an addon's function table, and the table made the module's exports.
#define ADDON_FUNCTION(name, function) {name, NULL, function, NULL, NULL, NULL, napi_default, NULL}
#define EXPORT_FUNCTIONS(env, exports, table) napi_define_properties(env, exports, sizeof table / sizeof table[0], table)

#endif
