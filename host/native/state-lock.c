// flock(2) for the state store's lock (host/state-store.ts): an exclusive lock on the state dir,
// which holds across network (and every other kind of) namespaces, and which the kernel releases
// when the holder unlocks, closes its descriptor or dies (SIGKILL included).
//
// Why native: Node has no flock(2).
//
// JS API; errors are thrown with `code` set to the errno's name:
//   tryLock(fd) -> boolean   flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another
//                            open file (this process's or another's) holds a lock on the file
//   unlock(fd)               flock(fd, LOCK_UN): released at once, even where a child forked
//                            meanwhile still shares the descriptor until it execs
// The descriptor is opened and closed from JS (fs.openSync, fs.closeSync).
#define _GNU_SOURCE  // strerrorname_np (napi-plumbing.h)
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "state-lock"
#include "../../shared/native/napi-plumbing.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/file.h>

static int fd_arg(napi_env env, napi_callback_info info, int32_t *fd) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return 0;
  if (napi_get_value_int32(env, argv[0], fd) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": expected a file descriptor");
    return 0;
  }
  return 1;
}

static napi_value try_lock(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;
  int result;
  do result = flock(fd, LOCK_EX | LOCK_NB);
  while (result != 0 && errno == EINTR);
  if (result != 0 && errno != EWOULDBLOCK) return throw_errno(env, errno, "flock");
  napi_value taken;
  napi_get_boolean(env, result == 0, &taken);
  return taken;
}

static napi_value unlock(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;
  int result;
  do result = flock(fd, LOCK_UN);
  while (result != 0 && errno == EINTR);
  if (result != 0) return throw_errno(env, errno, "flock");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("tryLock", try_lock),
      ADDON_FUNCTION("unlock", unlock),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
