// The agent's route netlink notification socket: rtnetlink multicast groups read with recvmsg(2)
// under a uv_poll, datagrams handed to JS in batches.
//
// Why native: the `netlink` package's socket dies on the one event this socket must survive.
// When a burst of notifications overruns the receive buffer the kernel sets ENOBUFS on the
// socket, epoll reports EPOLLERR, libuv calls the poll callback with UV_EBADF, and the package
// throws a C++ exception out of that callback (std::terminate: the agent aborts), or, where it
// did not, closes the socket. Here an overflow is reported (the agent reads the whole state
// again) and the socket read on.
//
// JS API (guest/netd/rtnl-events.ts wraps it):
//   open(groups, bufferBytes) -> handle   bind to the RTMGRP_* bitmask `groups`; throws {code}
//   receiveBuffer(handle) -> { bytes, forced }   what SO_RCVBUF says now; forced: SO_RCVBUFFORCE took
//   watch(handle, onEvent(status, bytes))
//       status 0: bytes holds the datagrams read, each padded to 4 bytes (netlink messages only:
//                 what the kernel sent, no one else's)
//       -ENOBUFS: notifications were lost (the buffer overflowed, or one was cut short); what the
//                 socket still held is discarded first, until it is found empty (over as many
//                 wakes as that takes: discard_queued), so every notification delivered after it
//                 was sent after it; reading goes on
//       other < 0: -errno, the socket failed; reported once, reading stops
//   close(handle)
#define _GNU_SOURCE  // strerrorname_np (napi-plumbing.h)
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "rtnl-events"
// Its handles' tag (polled-socket.h): random, its own.
#define POLLED_TYPE_TAG {0x5c1f0e2a9d4b7361ULL, 0xb2e84f17c60a935dULL}
#include "../../shared/native/napi-plumbing.h"
#include "polled-socket.h"
#include <uv.h>

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif
#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

// Room for one datagram: a notification is one message, far smaller (a link's, with every
// attribute, a few KiB); a larger one is reported as lost, never half read.
#define DATAGRAM_MAX 65536
// Where one wake's datagrams are gathered before JS gets a copy.
#define ARENA_BYTES (1024 * 1024)
// Datagrams one readiness event reads before other handles get their turn.
#define READS_PER_WAKE 256

typedef struct {
  polled_socket polled;  // first: the handle points at both (polled-socket.h)
  // Reported a failure: polling stopped for good (close() still lets go of the socket).
  int failed;
  // SO_RCVBUFFORCE set the buffer (else SO_RCVBUF, capped at net.core.rmem_max).
  int forced;
  // A loss was met: what the socket holds is discarded, nothing read, until it is found empty;
  // the overflow is reported then.
  int discarding;
  uint8_t *arena;
} events_socket;

#define CHECK(call)                                                      \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      napi_throw_error(env, "EINTERNAL", "rtnl-events: " #call " failed"); \
      return NULL;                                                       \
    }                                                                    \
  } while (0)

static events_socket *socket_of(napi_env env, napi_value handle) {
  return (events_socket *)polled_socket_of(env, handle);
}

static void destroy(polled_socket *polled) {
  events_socket *socket = (events_socket *)polled;
  free(socket->arena);
  free(socket);
}

static napi_value socket_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  uint32_t groups = 0, buffer_bytes = 0;
  CHECK(napi_get_value_uint32(env, argv[0], &groups));
  CHECK(napi_get_value_uint32(env, argv[1], &buffer_bytes));
  if (groups == 0 || buffer_bytes > INT32_MAX / 2) {
    napi_throw_range_error(env, "EINVAL", "rtnl-events: groups must be a non-empty RTMGRP_* mask and the buffer at most 1 GiB");
    return NULL;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int forced = 0;
  if (buffer_bytes > 0) {
    // SO_RCVBUFFORCE passes net.core.rmem_max (CAP_NET_ADMIN, which the agent has); without it
    // SO_RCVBUF, which the kernel caps there. Either way the size is what receiveBuffer() says.
    int size = (int)buffer_bytes;
    forced = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) == 0;
    if (!forced) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  struct sockaddr_nl address;
  memset(&address, 0, sizeof address);
  address.nl_family = AF_NETLINK;
  address.nl_groups = groups;
  if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    int bind_error = errno;
    close(fd);
    return throw_errno(env, bind_error, "bind");
  }
  events_socket *socket = calloc(1, sizeof *socket);
  uint8_t *arena = malloc(ARENA_BYTES);
  if (socket == NULL || arena == NULL) {
    free(socket);
    free(arena);
    close(fd);
    return throw_errno(env, ENOMEM, "socket");
  }
  socket->arena = arena;
  socket->forced = forced;
  return polled_socket_handle(env, &socket->polled, fd, destroy);
}

static napi_value socket_receive_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  events_socket *socket = socket_of(env, argv[0]);
  if (socket == NULL) return NULL;
  int size = 0;
  socklen_t length = sizeof size;
  if (getsockopt(socket->polled.fd, SOL_SOCKET, SO_RCVBUF, &size, &length) != 0) return throw_errno(env, errno, "getsockopt");
  napi_value result;
  CHECK(napi_create_object(env, &result));
  if (set_number(env, result, "bytes", size) == NULL) return NULL;
  napi_value forced;
  CHECK(napi_get_boolean(env, socket->forced != 0, &forced));
  CHECK(napi_set_named_property(env, result, "forced", forced));
  return result;
}

typedef struct {
  int status;
  size_t length;
} events_batch;

// (status, bytes): a copy of the batch's `length` bytes of the arena, or undefined.
static size_t batch_arguments(polled_socket *polled, const void *event, napi_value *argv) {
  napi_env env = polled->env;
  const events_batch *batch = event;
  int status = batch->status;
  size_t length = batch->length;
  void *copy = NULL;
  if (length > 0 && napi_create_buffer_copy(env, length, ((events_socket *)polled)->arena, &copy, &argv[1]) != napi_ok) {
    // No memory for them: the notifications are lost, which is an overflow.
    status = -ENOBUFS;
    length = 0;
  }
  if (length == 0) napi_get_undefined(env, &argv[1]);
  napi_create_int32(env, status, &argv[0]);
  return 2;
}

// Hand JS one event: status 0 with `length` bytes of the arena, or -errno without bytes. A JS
// exception goes to 'uncaughtException' (a bug of the agent's, reported as Node reports any),
// never out of this libuv callback; microtasks (the agent's promises) run afterwards. The
// listener may close the socket: callers look at `closed` after each delivery.
static void deliver(events_socket *socket, int status, size_t length) {
  events_batch batch = {.status = status, .length = length};
  polled_deliver(&socket->polled, batch_arguments, &batch);
}

// Discard what the socket's queue still holds: a loss was met, and is reported once the queue
// has been found empty. What it holds was sent before the notifications lost, or among them; the
// agent reads the whole state again after the report, which has all of it, and replayed over that
// re-read an old notification would put back what has gone since (an address deleted, an old name
// or MAC). The kernel queues nothing more after a loss until the queue is found empty (then what
// comes was sent after the loss), and says the next loss again: so what is read after the report
// was sent after it, nothing lost between. A wake discards at most twice the buffer's bytes (the
// queue may refill as fast as it is read); the rest waits for the next wake, still discarded and
// the report still owed: reported earlier, what is left would be told after it, older than the
// re-read, and with a later loss behind it whose error this discard took. 1: found empty (or a
// failure the next read meets), 0: more to discard (the socket is readable: another wake comes).
static int discard_queued(events_socket *socket) {
  int size = 0;
  socklen_t length = sizeof size;
  if (getsockopt(socket->polled.fd, SOL_SOCKET, SO_RCVBUF, &size, &length) != 0 || size <= 0) size = DATAGRAM_MAX;
  for (int64_t left = 2 * (int64_t)size;;) {
    // MSG_TRUNC: the datagram's whole length, none of it copied; it is taken off the queue. Once
    // the wake's bytes are used up, a peek: a queue emptied right then would wake nothing again.
    ssize_t got = recv(socket->polled.fd, NULL, 0, MSG_DONTWAIT | MSG_TRUNC | (left > 0 ? 0 : MSG_PEEK));
    if (got < 0) {
      if (errno == EINTR || errno == ENOBUFS) continue;
      return 1;  // EAGAIN: empty; another error: the next read meets it
    }
    if (left <= 0) return 0;
    left -= got > 0 ? got : 1;
  }
}

// A loss met: discard, then report it once the queue is empty (else a later wake goes on).
static void overflowed(events_socket *socket) {
  socket->discarding = 1;
  if (!discard_queued(socket)) return;
  socket->discarding = 0;
  deliver(socket, -ENOBUFS, 0);
}

// The socket failed for good: said once, and no more polling (close() lets go of it).
static void fail(events_socket *socket, int error) {
  socket->failed = 1;
  uv_poll_stop(&socket->polled.poll);
  deliver(socket, -error, 0);
}

static void on_readable(uv_poll_t *poll, int status, int events);

static void poll_again(events_socket *socket) {
  // Not when the listener closed it: the poll handle is closing then.
  if (socket->polled.closed || socket->failed) return;
  int error = uv_poll_start(&socket->polled.poll, UV_READABLE, on_readable);
  if (error != 0) fail(socket, -error);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  events_socket *socket = poll->data;
  if (socket->polled.closed || socket->failed) return;
  if (status < 0) {
    // libuv stops a poll handle on EPOLLERR, reporting UV_EBADF: the socket's error says what it
    // was (getting SO_ERROR clears it). ENOBUFS: the receive buffer overflowed.
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(socket->polled.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    // (0 while discarding: a discard's read took it.)
    if (error == ENOBUFS || (error == 0 && socket->discarding)) {
      overflowed(socket);
    } else if (error != 0) {
      fail(socket, error);
      return;
    }
    // (0: a recvmsg took the error first and reported it.)
    poll_again(socket);
    return;
  }
  // Still discarding after a loss: nothing is read until the queue has been found empty.
  if (socket->discarding) {
    overflowed(socket);
    return;
  }
  size_t used = 0;
  int lost = 0, error = 0;
  for (int reads = 0; reads < READS_PER_WAKE && ARENA_BYTES - used >= DATAGRAM_MAX; reads++) {
    struct sockaddr_nl sender;
    struct iovec vector = {.iov_base = socket->arena + used, .iov_len = DATAGRAM_MAX};
    struct msghdr header;
    memset(&header, 0, sizeof header);
    header.msg_name = &sender;
    header.msg_namelen = sizeof sender;
    header.msg_iov = &vector;
    header.msg_iovlen = 1;
    ssize_t got = recvmsg(socket->polled.fd, &header, MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // The overflow said by the read that met it: what is queued still is discarded.
      if (errno == ENOBUFS) {
        lost = 1;
        break;
      }
      error = errno;
      break;
    }
    if (header.msg_flags & MSG_TRUNC) {
      lost = 1;
      continue;
    }
    // Only the kernel speaks on these groups; anything else is no notification.
    if (sender.nl_pid != 0 || got == 0) continue;
    size_t padded = NLMSG_ALIGN((size_t)got);
    memset(socket->arena + used + got, 0, padded - (size_t)got);
    used += padded;
  }
  if (used > 0) deliver(socket, 0, used);
  if (lost && !socket->polled.closed) overflowed(socket);
  if (error != 0 && !socket->polled.closed) fail(socket, error);
}

static napi_value socket_watch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  events_socket *socket = socket_of(env, argv[0]);
  if (socket == NULL) return NULL;
  if (socket->polled.callback != NULL) {
    napi_throw_error(env, "EBUSY", "rtnl-events: socket already watched");
    return NULL;
  }
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "rtnl-events: the callback must be a function");
    return NULL;
  }
  if (!polled_socket_watch(env, &socket->polled, argv[1], "spectrum:rtnl-events")) return NULL;
  int error = uv_poll_start(&socket->polled.poll, UV_READABLE, on_readable);
  if (error != 0) {
    // Watched but never polled: close() still lets go of the poll handle.
    socket->failed = 1;
    return throw_errno(env, -error, "uv_poll_start");
  }
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("open", socket_open),
      ADDON_FUNCTION("receiveBuffer", socket_receive_buffer),
      ADDON_FUNCTION("watch", socket_watch),
      ADDON_FUNCTION("close", polled_socket_close),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
