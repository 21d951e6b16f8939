// The life of a socket that an addon reads under a uv_poll and whose JS handle is an external:
// open, watch, deliver to a JS listener, close, finalize. Shared by guest/native/udp-batch.c and
// guest/native/rtnl-events.c, which keep what is their own: how the socket is made, what a
// readable socket reads, what a poll error means, and what the listener is handed.
// The including file includes <node_api.h> (NAPI_VERSION 8 at least: type tags), defines
// ADDON_NAME and POLLED_TYPE_TAG (a napi_type_tag initialiser of its own) and includes
// napi-plumbing.h first; its socket type has a polled_socket as its first member (the handle
// points at both).
#ifndef SPECTRUM_POLLED_SOCKET_H
#define SPECTRUM_POLLED_SOCKET_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

typedef struct polled_socket polled_socket;

// Marks this addon's handles: another addon's external (its socket another struct) is refused,
// never read as ours.
static const napi_type_tag polled_type_tag = POLLED_TYPE_TAG;

struct polled_socket {
  int fd;
  int closed;
  // Inside the listener: close() then leaves the napi clean-up to the delivery (its async
  // context is in use).
  int delivering;
  // Owners of this memory: the JS handle until finalized, and the poll handle until libuv has
  // closed it. The last to let go destroys it.
  int holds;
  uv_poll_t poll;
  napi_env env;
  // Set while watched (then the poll handle is initialised and holds the memory too).
  napi_ref callback;
  napi_async_context context;
  // Frees the addon's socket and whatever it owns.
  void (*destroy)(polled_socket *socket);
};

// The listener's arguments at most.
#define POLLED_ARGS_MAX 2

// The socket of a handle JS passes, closed or not; NULL (a TypeError thrown) when it is no handle
// of this addon's.
__attribute__((unused)) static polled_socket *polled_socket_data(napi_env env, napi_value handle) {
  bool tagged = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, handle, &polled_type_tag, &tagged) != napi_ok || !tagged ||
      napi_get_value_external(env, handle, &data) != napi_ok || data == NULL) {
    // A value that is no object leaves an exception pending from the check: one thrown at a time.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": not a socket handle of this addon");
    return NULL;
  }
  return data;
}

// The socket of a handle JS passes; NULL (thrown) when it is none or closed.
__attribute__((unused)) static polled_socket *polled_socket_of(napi_env env, napi_value handle) {
  polled_socket *socket = polled_socket_data(env, handle);
  if (socket == NULL) return NULL;
  if (socket->closed) {
    napi_throw_error(env, "EBADF", ADDON_NAME ": socket is closed");
    return NULL;
  }
  return socket;
}

__attribute__((unused)) static void polled_let_go(polled_socket *socket) {
  if (--socket->holds == 0) socket->destroy(socket);
}

__attribute__((unused)) static void polled_on_poll_closed(uv_handle_t *handle) {
  polled_let_go(handle->data);
}

__attribute__((unused)) static void polled_forget_callback(polled_socket *socket) {
  if (socket->callback == NULL) return;
  napi_delete_reference(socket->env, socket->callback);
  napi_async_destroy(socket->env, socket->context);
  socket->callback = NULL;
}

// Closing, once: by close(), or by the finalizer of a handle never closed. Safe from inside the
// listener: libuv calls back on_poll_closed only later, so the socket outlives the delivery.
__attribute__((unused)) static void polled_release(polled_socket *socket) {
  if (socket->closed) return;
  socket->closed = 1;
  if (socket->callback != NULL) {
    // libuv must let go of the descriptor before it is closed.
    uv_poll_stop(&socket->poll);
    uv_close((uv_handle_t *)&socket->poll, polled_on_poll_closed);
    // Not while the listener runs: its async context is in use.
    if (!socket->delivering) polled_forget_callback(socket);
  }
  close(socket->fd);
}

// After close() too (the release is then nothing): the handle lets go of the memory.
__attribute__((unused)) static void polled_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  polled_socket *socket = data;
  polled_release(socket);
  polled_let_go(socket);
}

// `socket` (zeroed, the addon's own fields set) owns descriptor `fd` from now on; its handle for
// JS, or NULL (thrown) with the descriptor closed and the socket destroyed.
__attribute__((unused)) static napi_value polled_socket_handle(napi_env env, polled_socket *socket, int fd, void (*destroy)(polled_socket *)) {
  socket->fd = fd;
  socket->holds = 1;
  socket->env = env;
  socket->destroy = destroy;
  napi_value handle;
  if (napi_create_external(env, socket, polled_finalize, NULL, &handle) != napi_ok) {
    close(fd);
    destroy(socket);
    napi_throw_error(env, "EINTERNAL", ADDON_NAME ": cannot create a handle");
    return NULL;
  }
  // The finalizer owns the socket from here on (it closes the descriptor).
  if (napi_type_tag_object(env, handle, &polled_type_tag) != napi_ok) {
    polled_release(socket);
    napi_throw_error(env, "EINTERNAL", ADDON_NAME ": cannot tag a handle");
    return NULL;
  }
  return handle;
}

// An N-API call of this header's that should not fail: when it does, thrown, and `fallback` returned.
#define POLLED_CHECK(call, fallback)                                        \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error(env, "EINTERNAL", ADDON_NAME ": " #call " failed"); \
      return fallback;                                                      \
    }                                                                       \
  } while (0)

// Watch a socket not watched yet: `listener` kept, the poll handle made (not started: what to do
// when uv_poll_start fails is the addon's). 0 when an exception was thrown.
__attribute__((unused)) static int polled_socket_watch(napi_env env, polled_socket *socket, napi_value listener, const char *resource) {
  uv_loop_t *loop = NULL;
  POLLED_CHECK(napi_get_uv_event_loop(env, &loop), 0);
  napi_value name;
  POLLED_CHECK(napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &name), 0);
  POLLED_CHECK(napi_async_init(env, NULL, name, &socket->context), 0);
  if (napi_create_reference(env, listener, 1, &socket->callback) != napi_ok) {
    napi_async_destroy(env, socket->context);
    socket->context = NULL;
    socket->callback = NULL;
    napi_throw_error(env, "EINTERNAL", ADDON_NAME ": napi_create_reference failed");
    return 0;
  }
  if (uv_poll_init(loop, &socket->poll, socket->fd) != 0) {
    polled_forget_callback(socket);
    throw_errno(env, EBADF, "uv_poll_init");
    return 0;
  }
  socket->poll.data = socket;
  socket->holds += 1;
  return 1;
}

// Makes the listener's arguments (at most POLLED_ARGS_MAX) for `event`, inside the delivery's
// handle scope; returns how many.
typedef size_t polled_arguments(polled_socket *socket, const void *event, napi_value *argv);

// Hand the listener one event, from a libuv callback, in a handle scope of its own. A JS
// exception goes to 'uncaughtException' (a bug of the agent's, reported as Node reports any),
// never out of the libuv callback; microtasks run afterwards. The listener may close the socket.
__attribute__((unused)) static void polled_deliver(polled_socket *socket, polled_arguments *arguments, const void *event) {
  napi_env env = socket->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, argv[POLLED_ARGS_MAX];
  if (napi_get_reference_value(env, socket->callback, &callback) == napi_ok && callback != NULL) {
    size_t argc = arguments(socket, event, argv);
    socket->delivering = 1;
    make_callback(env, socket->context, callback, argc, argv);
    socket->delivering = 0;
  }
  napi_close_handle_scope(env, scope);
  if (socket->closed) polled_forget_callback(socket);
}

// close(handle): idempotent; a handle that is no socket throws.
__attribute__((unused)) static napi_value polled_socket_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  polled_socket *socket = polled_socket_data(env, argv[0]);
  if (socket != NULL) polled_release(socket);
  return NULL;
}

#endif
