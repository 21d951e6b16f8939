// UDP sockets for the DNS forwarder, read with recvmmsg(2) straight into one shared arena.
//
// Why native: Node's dgram hands every datagram to JS as a fresh Buffer (a 64 KiB allocation
// shrunk by realloc), with a new sender object whose address is formatted by inet_ntop, through
// an emitter; each send builds a request object. Measured, that was half of the forwarder's CPU
// time per query. Here a readable socket is drained in batches into one arena that JS reads in
// place, senders' addresses arrive as numbers, and a send is one sendto(2).
//
// JS API (guest/dns/udp-socket.ts wraps it):
//   arena(buffer: ArrayBuffer, meta: Int32Array, slots, slotSize)   once, before any watch()
//   open(family 4|6, address, port, bufferBytes) -> handle          bind; throws {code}
//   connect(handle, address, port)                                  throws {code}
//   bindToIndex(handle, ifindex)        SO_BINDTOIFINDEX, checked (bind-to-index.h; CAP_NET_RAW before Linux 5.7); throws {code}
//   watch(handle, onBatch(count, failed))   count > 0: datagrams in slots 0..count-1; < 0: -errno,
//       an error the kernel queued on the socket (reading goes on), or, with failed true, the
//       socket failed for good: reported once, reading stops (close() still lets go of it).
//       Which is which: ERROR_CLASSES. Throws {code} where polling cannot start (on a socket a
//       send found broken before, that send's errno).
//   send(handle, bytes, offset, length) -> sent bytes or -errno     (connected socket)
//   sendTo(handle, bytes, offset, length, port, a0, a1, a2, a3) -> sent bytes or -errno
//       A send whose error is fatal (ERROR_CLASSES) also stops reading: the caller reports it.
//   errorClass(errno, sending) -> 0 again, 1 datagram, 2 fatal   (ERROR_CLASSES)
//   tcpConnect(family, address, port, source, ifindex[, zoneIndex]) -> fd   non-blocking connect
//       from `source` through link `ifindex` (as bindToIndex; 0: none); the caller owns the
//       descriptor; throws {code}. `zoneIndex` (IPv6; 0 or absent: none): the remote address's
//       zone as that index, a number, for an `address` given without one (ENXIO where no
//       interface has it); written as text, "%3" would be read as a name first (below).
// An IPv6 address may carry a zone as glibc reads one (make_address): an interface's name on a
// link-local address, or an index; one naming no interface throws ENXIO.
//   tcpUnacknowledged(fd) -> bytes   written to TCP socket `fd` and not acknowledged by its peer
//       yet, sent or not (SIOCOUTQ); throws {code}
//   localPort(handle) -> number
//   close(handle)
// meta, per slot (META_INTS ints): length, port, a0..a3 (IPv4: a0 alone, host order), flags.
#define _GNU_SOURCE  // recvmmsg
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "udp-batch"
// Its handles' tag (polled-socket.h): random, its own.
#define POLLED_TYPE_TAG {0x93d6a1b04e7f2c58ULL, 0x0f4be8c2d1a79e36ULL}
#include "../../shared/native/napi-plumbing.h"
#include "bind-to-index.h"
#include "polled-socket.h"
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>  // SIOCOUTQ
#include <net/if.h>
#include <netdb.h>  // getaddrinfo
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>  // snprintf
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SLOTS 64
#define META_INTS 8
#define FLAG_TRUNCATED 1
// Batches one readiness event may read before other sockets get their turn.
#define BATCHES_PER_WAKE 1

typedef struct {
  polled_socket polled;  // first: the handle points at both (polled-socket.h)
  int family;
  // The errno it failed for good with, or 0 (a fatal read error, reported, or a fatal send
  // error, which the sender reports): polling stopped, or never started (close() still lets go
  // of the socket).
  int failed;
} udp_socket;

static struct {
  napi_ref buffer_ref;
  napi_ref meta_ref;
  uint8_t *bytes;
  int32_t *meta;
  unsigned slots;
  size_t slot_size;
} arena;

static struct mmsghdr messages[MAX_SLOTS];
static struct iovec vectors[MAX_SLOTS];
static struct sockaddr_storage senders[MAX_SLOTS];

#define CHECK(call)                                                  \
  do {                                                               \
    if ((call) != napi_ok) {                                         \
      napi_throw_error(env, "EINTERNAL", "udp-batch: " #call " failed"); \
      return NULL;                                                   \
    }                                                                \
  } while (0)

// What an errno from recvmmsg(2), SO_ERROR or send(2) means for the socket. Reading and sending
// differ: the same errno can be a peer's trouble one way and our bug the other.
typedef enum {
  // Nothing to report: nothing (more) queued, or a send dropped for want of room for a moment.
  // Reading waits for the next readiness; a send returns it (the datagram is lost, as UDP loses
  // datagrams). The socket is fine.
  ERROR_AGAIN = 0,
  // A datagram's or a peer's trouble: an ICMP error the kernel queued on a connected socket, or a
  // route or firewall a send met. Reported (reading goes on; a send returns it); the socket is fine.
  ERROR_DATAGRAM = 1,
  // The socket, or our use of it, is broken and will not heal: reported once as a failure, and
  // reading stops (an error that stays would wake the loop for ever). Its owner binds a new one.
  ERROR_FATAL = 2,
} error_class;

// Errnos not listed: fatal when reading (an error we cannot explain, which may stay: the owner's
// new socket, with its backoff, is the safe course), a lost datagram when sending (an xfrm or
// routing error not listed here must not tear down a socket that reads fine).
static const struct {
  int error;
  error_class reading, sending;
} ERROR_CLASSES[] = {
    // Nothing queued; a full send buffer (EWOULDBLOCK is EAGAIN on Linux).
    {EAGAIN, ERROR_AGAIN, ERROR_AGAIN},
    // A signal came first; the datagram stays queued (a non-blocking call hardly sees it).
    {EINTR, ERROR_AGAIN, ERROR_AGAIN},
    // The kernel was short of memory for this call, or a device's queue was full (a send).
    {ENOMEM, ERROR_AGAIN, ERROR_AGAIN},
    {ENOBUFS, ERROR_AGAIN, ERROR_AGAIN},
    // ICMP errors. Without IP_RECVERR the kernel queues only the "hard" ones, and only on a
    // connected socket (an upstream's); the next read or send returns it, once (IPv4
    // icmp_err_convert, IPv6 icmpv6_err_convert). They come from anyone who can forge one for our
    // port: never fatal. Sends also meet the unreachable ones from the routing table.
    {ECONNREFUSED, ERROR_DATAGRAM, ERROR_DATAGRAM},  // port unreachable: an upstream restarting
    {ENETUNREACH, ERROR_DATAGRAM, ERROR_DATAGRAM},   // net unreachable or unknown; no route (a send)
    {EHOSTUNREACH, ERROR_DATAGRAM, ERROR_DATAGRAM},  // host unreachable, filtered; no neighbour (a send)
    {EHOSTDOWN, ERROR_DATAGRAM, ERROR_DATAGRAM},     // host unknown
    {ENONET, ERROR_DATAGRAM, ERROR_DATAGRAM},        // host isolated
    {ENOPROTOOPT, ERROR_DATAGRAM, ERROR_DATAGRAM},   // protocol unreachable
    {EPROTO, ERROR_DATAGRAM, ERROR_DATAGRAM},        // parameter problem
    {EACCES, ERROR_DATAGRAM, ERROR_DATAGRAM},        // ICMPv6 administratively prohibited; a prohibit route (a send)
    {EMSGSIZE, ERROR_DATAGRAM, ERROR_DATAGRAM},      // ICMPv6 packet too big; a datagram larger than the path (a send)
    // What a send meets once a route, our source address or a link goes (the forwarder connects
    // its upstream sockets again on these), or a firewall rule (nftables, cgroup BPF) refuses it.
    // No read returns them: there, as unlisted, fatal (EINVAL is a bad argument of ours).
    {EINVAL, ERROR_FATAL, ERROR_DATAGRAM},  // a connected socket's source address is no longer ours
    {EADDRNOTAVAIL, ERROR_FATAL, ERROR_DATAGRAM},
    {ENETDOWN, ERROR_FATAL, ERROR_DATAGRAM},
    {ENODEV, ERROR_FATAL, ERROR_DATAGRAM},  // the link the socket is bound to is gone
    {EPERM, ERROR_FATAL, ERROR_DATAGRAM},
    // Broken for good. Not our descriptor, or none (closed or replaced behind our back); bad
    // memory or flags (our bug).
    {EBADF, ERROR_FATAL, ERROR_FATAL},
    {ENOTSOCK, ERROR_FATAL, ERROR_FATAL},
    {EFAULT, ERROR_FATAL, ERROR_FATAL},
    {EOPNOTSUPP, ERROR_FATAL, ERROR_FATAL},
    // The kernel destroyed the socket (SOCK_DESTROY: `ss -K`): it is disconnected and, unless its
    // port was bound explicitly, unhashed with port 0: it never receives again, and sends on it
    // fail with EDESTADDRREQ.
    {ECONNABORTED, ERROR_FATAL, ERROR_FATAL},
    // A connected socket that is no longer connected (destroyed, as above), or shut down.
    {EDESTADDRREQ, ERROR_FATAL, ERROR_FATAL},
    {ENOTCONN, ERROR_FATAL, ERROR_FATAL},
    {EPIPE, ERROR_FATAL, ERROR_FATAL},
};

static error_class classify(int error, int sending) {
  for (size_t i = 0; i < sizeof ERROR_CLASSES / sizeof ERROR_CLASSES[0]; i++) {
    if (ERROR_CLASSES[i].error == error) return sending ? ERROR_CLASSES[i].sending : ERROR_CLASSES[i].reading;
  }
  return sending ? ERROR_DATAGRAM : ERROR_FATAL;
}

static napi_value number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

// The arguments of a call whose first argument is a socket handle, and that socket (NULL: thrown).
static udp_socket *socket_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  if (!get_args(env, info, want, argv)) return NULL;
  return (udp_socket *)polled_socket_of(env, argv[0]);
}

// What make_address returns for an IPv6 address whose zone names no interface: neither an
// interface's name (on a link-local address) nor an index one has (0 included). No bind(2) or
// connect(2) of ours returns it, so it says that alone.
#define ZONE_NAMES_NO_INTERFACE ENXIO

// The errno of a failed if_nametoindex or if_indextoname: ZONE_NAMES_NO_INTERFACE where no
// interface has that name (ENODEV, one 16 bytes or more long included) or index (ENXIO), else why
// it could not look. glibc asks the kernel through a socket of its own, and where none can be
// opened says ENOENT: the errno of opening one says why (out of descriptors, EMFILE).
static int interface_lookup_error(int error) {
  if (error == ENODEV || error == ENXIO || error == 0) return ZONE_NAMES_NO_INTERFACE;
  if (error != ENOENT) return error;
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  close(fd);
  return EAGAIN;  // descriptors were freed meanwhile
}

// Why `zone` of `address`, which getaddrinfo did not take, could not be read: as neither a name
// (which only a link-local address may have) nor a number, it names no interface, unless the look
// for the name failed for another reason, which getaddrinfo keeps to itself.
static int zone_error(const struct in6_addr *address, const char *zone) {
  if (!IN6_IS_ADDR_LINKLOCAL(address) && !IN6_IS_ADDR_MC_LINKLOCAL(address) && !IN6_IS_ADDR_MC_NODELOCAL(address)) return ZONE_NAMES_NO_INTERFACE;
  errno = 0;
  if (if_nametoindex(zone) != 0) return EAGAIN;  // it came meanwhile
  return interface_lookup_error(errno);
}

// family 4|6 and a literal address into a sockaddr; 0 on success, else an errno
// (ZONE_NAMES_NO_INTERFACE: see there).
static int make_address(napi_env env, int family, napi_value address, uint32_t port, struct sockaddr_storage *out, socklen_t *length) {
  // An address, '%' and a zone: an interface's name (IFNAMSIZ), or a number, which glibc reads
  // whatever its length (leading zeros): 80 characters at most, as upstream.ts takes them
  // (MAX_UPSTREAM_TEXT), with room to spare.
  char text[128];
  // Whole or not at all (whole_string): fe80::1%<118 digits>é cut at a whole character was read
  // as the digits' index, and fe80::1%lo\0x as on lo.
  if (!whole_string(env, address, text, sizeof text)) return EINVAL;
  memset(out, 0, sizeof *out);
  if (family == 4) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    if (text[0] != '\0' && inet_pton(AF_INET, text, &in4->sin_addr) != 1) return EINVAL;
    *length = sizeof *in4;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    *length = sizeof *in6;
    if (text[0] == '\0') return 0;
    // A link-local address names its link: fe80::1%eth0, or by index, fe80::1%2. Read by
    // getaddrinfo, as glibc's resolver reads a resolv.conf nameserver (the same parser,
    // __inet6_scopeid_pton): on a link-local address an interface's name, else a number.
    struct addrinfo hints = {.ai_family = AF_INET6, .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *found = NULL;
    int status = getaddrinfo(text, NULL, &hints, &found);
    if (status != 0 || found == NULL) {
      if (status == EAI_MEMORY) return ENOMEM;
      // Refused for its zone alone where the address without it is one.
      char *zone = strchr(text, '%');
      if (zone == NULL) return EINVAL;
      *zone++ = '\0';
      return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1 ? zone_error(&in6->sin6_addr, zone) : EINVAL;
    }
    const struct sockaddr_in6 *parsed = (const struct sockaddr_in6 *)found->ai_addr;
    in6->sin6_addr = parsed->sin6_addr;
    in6->sin6_scope_id = parsed->sin6_scope_id;
    freeaddrinfo(found);
    // A zone read as index 0 (fe80::1%0) names none: the kernel would take the address as given
    // without one (EINVAL on a link-local address), an error that says nothing of the zone.
    if (in6->sin6_scope_id == 0) return strchr(text, '%') == NULL ? 0 : ZONE_NAMES_NO_INTERFACE;
    // A number is taken without a look (as glibc does): one no interface has would fail only at
    // connect, as ENETUNREACH (as if a route were missing). The look itself may fail for another
    // reason (out of descriptors: it asks through a socket), said as such.
    char name[IF_NAMESIZE];
    errno = 0;
    if (if_indextoname(in6->sin6_scope_id, name) == NULL) return interface_lookup_error(errno);
  }
  return 0;
}

static napi_value arena_set(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  void *bytes = NULL;
  size_t byte_length = 0;
  CHECK(napi_get_arraybuffer_info(env, argv[0], &bytes, &byte_length));
  napi_typedarray_type type;
  size_t meta_length = 0;
  void *meta = NULL;
  CHECK(napi_get_typedarray_info(env, argv[1], &type, &meta_length, &meta, NULL, NULL));
  uint32_t slots = 0, slot_size = 0;
  CHECK(napi_get_value_uint32(env, argv[2], &slots));
  CHECK(napi_get_value_uint32(env, argv[3], &slot_size));
  if (type != napi_int32_array || slots == 0 || slots > MAX_SLOTS || slot_size == 0 || (size_t)slots * slot_size > byte_length ||
      meta_length < (size_t)slots * META_INTS) {
    napi_throw_range_error(env, "EINVAL", "udp-batch: arena too small for its slots");
    return NULL;
  }
  if (arena.buffer_ref != NULL) {
    napi_delete_reference(env, arena.buffer_ref);
    napi_delete_reference(env, arena.meta_ref);
  }
  // The references keep both alive as long as the module may write into them.
  CHECK(napi_create_reference(env, argv[0], 1, &arena.buffer_ref));
  CHECK(napi_create_reference(env, argv[1], 1, &arena.meta_ref));
  arena.bytes = bytes;
  arena.meta = meta;
  arena.slots = slots;
  arena.slot_size = slot_size;
  return NULL;
}

static void destroy(polled_socket *socket) {
  free(socket);
}

static napi_value socket_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint32_t family = 0, port = 0, buffer_bytes = 0;
  CHECK(napi_get_value_uint32(env, argv[0], &family));
  CHECK(napi_get_value_uint32(env, argv[2], &port));
  CHECK(napi_get_value_uint32(env, argv[3], &buffer_bytes));
  if ((family != 4 && family != 6) || port > 65535) {
    napi_throw_range_error(env, "EINVAL", "udp-batch: family must be 4 or 6 and port 0..65535");
    return NULL;
  }
  struct sockaddr_storage address;
  socklen_t length = 0;
  int error = make_address(env, (int)family, argv[1], port, &address, &length);
  if (error != 0) return throw_errno(env, error, "bad local address");
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (family == 6) {
    int only = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
  }
  if (buffer_bytes > 0) {
    // Capped by the kernel at rmem_max / wmem_max: not an error.
    int size = (int)buffer_bytes;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  if (bind(fd, (struct sockaddr *)&address, length) != 0) {
    int bind_error = errno;
    close(fd);
    return throw_errno(env, bind_error, "bind");
  }
  udp_socket *socket = calloc(1, sizeof *socket);
  if (socket == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "socket");
  }
  socket->family = (int)family;
  return polled_socket_handle(env, &socket->polled, fd, destroy);
}

static napi_value socket_connect(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  udp_socket *socket = socket_args(env, info, 3, argv);
  if (socket == NULL) return NULL;
  uint32_t port = 0;
  CHECK(napi_get_value_uint32(env, argv[2], &port));
  struct sockaddr_storage address;
  socklen_t length = 0;
  int error = make_address(env, socket->family, argv[1], port, &address, &length);
  if (error != 0) return throw_errno(env, error, "bad remote address");
  if (connect(socket->polled.fd, (struct sockaddr *)&address, length) != 0) return throw_errno(env, errno, "connect");
  return NULL;
}

// The index of the interface an IPv6 address's zone names, read as a connect reads it
// (make_address: by name on a link-local address, else as a number); 0 for an address without
// one. Throws as a connect does (ENXIO: the zone names no interface). The forwarder tells by it
// that fe80::1%eth0 and fe80::1%2 are the same upstream where eth0 has index 2.
static napi_value zone_index(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct sockaddr_storage address;
  socklen_t length = 0;
  int error = make_address(env, 6, argv[0], 0, &address, &length);
  if (error != 0) return throw_errno(env, error, "bad address");
  return number(env, ((const struct sockaddr_in6 *)&address)->sin6_scope_id);
}

// A link's index as JS gives it: 1..INT_MAX; 0 (with a RangeError thrown) otherwise.
// A link index given from JS, an integer: 1..INT32_MAX, or, where `none_allowed`, 0 (no link).
// Read as a double: napi_get_value_uint32 cuts a fraction off (0.5 would be 0, no link; 2.5 link 2).
static int get_ifindex(napi_env env, napi_value value, int none_allowed, int *ifindex) {
  double number = -1;
  const double least = none_allowed ? 0 : 1;
  if (napi_get_value_double(env, value, &number) != napi_ok || !(number >= least && number <= INT32_MAX) || (double)(int32_t)number != number) {
    napi_throw_range_error(env, "EINVAL", none_allowed ? "udp-batch: a link index is 0 (none) or 1..2147483647, a whole number" : "udp-batch: a link index is 1..2147483647, a whole number");
    return 0;
  }
  *ifindex = (int)number;
  return 1;
}

static napi_value socket_bind_to_index(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  udp_socket *socket = socket_args(env, info, 2, argv);
  if (socket == NULL) return NULL;
  int ifindex = 0;
  if (!get_ifindex(env, argv[1], 0, &ifindex)) return NULL;
  const char *step = NULL;
  int error = bind_to_index(socket->polled.fd, ifindex, &step);
  return error == 0 ? NULL : throw_errno(env, error, step);
}

// A TCP connection through one link, for the rare DNS-over-TCP exchange with an upstream that
// only that link reaches (Node's net cannot bind to a link); or, with link index 0, through none,
// to a link-local upstream whose zone picks its link (Node's net takes only names there, as
// libuv's uv_ip6_addr reads a zone, not fe80::1%2). Not a udp_socket: the descriptor is handed to
// net.Socket, which owns it from then on.
static napi_value tcp_connect(napi_env env, napi_callback_info info) {
  // The sixth, zoneIndex, may be left out.
  napi_value argv[6];
  size_t argc = 6;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": missing arguments");
    return NULL;
  }
  uint32_t family = 0, port = 0;
  CHECK(napi_get_value_uint32(env, argv[0], &family));
  CHECK(napi_get_value_uint32(env, argv[2], &port));
  if ((family != 4 && family != 6) || port == 0 || port > 65535) {
    napi_throw_range_error(env, "EINVAL", "udp-batch: family must be 4 or 6 and port 1..65535");
    return NULL;
  }
  // 0: through no one link; anything else must be a link's index. The same for the zone's.
  int ifindex = 0, zone_index = 0;
  if (!get_ifindex(env, argv[4], 1, &ifindex)) return NULL;
  if (argc > 5 && !get_ifindex(env, argv[5], 1, &zone_index)) return NULL;
  struct sockaddr_storage remote, local;
  socklen_t remote_length = 0, local_length = 0;
  int error = make_address(env, (int)family, argv[1], port, &remote, &remote_length);
  if (error == 0) error = make_address(env, (int)family, argv[3], 0, &local, &local_length);
  // The zone by its index, as a number: make_address reads a zone's text as glibc does, a name
  // first (an interface may be called "3", and "%3" is that one), so an index written into the
  // address could name another interface than the one of that index.
  if (error == 0 && zone_index != 0) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&remote;
    char name[IF_NAMESIZE];
    errno = 0;
    if (family != 6 || in6->sin6_scope_id != 0) error = EINVAL;
    else if (if_indextoname((unsigned)zone_index, name) == NULL) error = interface_lookup_error(errno);
    else in6->sin6_scope_id = (uint32_t)zone_index;
  }
  if (error != 0) return throw_errno(env, error, "bad address");
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  const char *step = NULL;
  int failure = ifindex == 0 ? 0 : bind_to_index(fd, ifindex, &step);
  if (failure == 0) {
    step = "bind";
    if (bind(fd, (struct sockaddr *)&local, local_length) == 0) {
      step = "connect";
      if (connect(fd, (struct sockaddr *)&remote, remote_length) == 0 || errno == EINPROGRESS) return number(env, fd);
    }
    failure = errno;
  }
  close(fd);
  return throw_errno(env, failure, step);
}

// For TCP, SIOCOUTQ is write_seq - snd_una: what was queued and is not acknowledged yet. Node has
// no getsockopt/ioctl: the forwarder resets a client connection only when this is 0 (forwarder.ts).
static napi_value tcp_unacknowledged(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd = -1;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int queued = 0;
  if (ioctl(fd, SIOCOUTQ, &queued) != 0) return throw_errno(env, errno, "ioctl SIOCOUTQ");
  return number(env, queued);
}

static napi_value socket_local_port(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  udp_socket *socket = socket_args(env, info, 1, argv);
  if (socket == NULL) return NULL;
  struct sockaddr_storage address;
  socklen_t length = sizeof address;
  if (getsockname(socket->polled.fd, (struct sockaddr *)&address, &length) != 0) return throw_errno(env, errno, "getsockname");
  uint16_t port = address.ss_family == AF_INET ? ((struct sockaddr_in *)&address)->sin_port : ((struct sockaddr_in6 *)&address)->sin6_port;
  return number(env, ntohs(port));
}

typedef struct {
  int count;
  int failed;
} udp_batch;

static size_t batch_arguments(polled_socket *socket, const void *event, napi_value *argv) {
  const udp_batch *batch = event;
  argv[0] = number(socket->env, batch->count);
  napi_get_boolean(socket->env, batch->failed != 0, &argv[1]);
  return 2;
}

// onBatch(count, false): the handler may close the socket (on_readable then reads no more); an
// exception it throws goes to 'uncaughtException' (a bug of the agent's).
static void deliver(udp_socket *socket, int count) {
  udp_batch batch = {.count = count, .failed = 0};
  polled_deliver(&socket->polled, batch_arguments, &batch);
}

// No more reading: the socket failed for good with `error` (close() still lets go of it).
static void stop_reading(udp_socket *socket, int error) {
  socket->failed = error != 0 ? error : EIO;
  // Watched: the poll handle is initialised (not so before watch()).
  if (socket->polled.callback != NULL) uv_poll_stop(&socket->polled.poll);
}

// The socket failed for good: said once (onBatch(-errno, true)), and no more polling.
static void fail(udp_socket *socket, int error) {
  stop_reading(socket, error);
  udp_batch batch = {.count = -error, .failed = 1};
  polled_deliver(&socket->polled, batch_arguments, &batch);
}

// An error reading the socket returned (recvmmsg, SO_ERROR): handed on as ERROR_CLASSES says.
// Whether reading may go on.
static int read_error(udp_socket *socket, int error) {
  switch (classify(error, 0)) {
    case ERROR_AGAIN:
      return 1;
    case ERROR_DATAGRAM:
      deliver(socket, -error);
      return 1;
    case ERROR_FATAL:
      break;
  }
  fail(socket, error);
  return 0;
}

static void describe_sender(unsigned slot) {
  int32_t *meta = arena.meta + slot * META_INTS;
  const struct sockaddr_storage *sender = &senders[slot];
  meta[0] = (int32_t)messages[slot].msg_len;
  meta[6] = (messages[slot].msg_hdr.msg_flags & MSG_TRUNC) ? FLAG_TRUNCATED : 0;
  if (sender->ss_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)sender;
    meta[1] = ntohs(in4->sin_port);
    meta[2] = (int32_t)ntohl(in4->sin_addr.s_addr);
    meta[3] = meta[4] = meta[5] = 0;
  } else {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sender;
    uint32_t words[4];
    memcpy(words, &in6->sin6_addr, sizeof words);
    meta[1] = ntohs(in6->sin6_port);
    for (int i = 0; i < 4; i++) meta[2 + i] = (int32_t)ntohl(words[i]);
  }
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  udp_socket *socket = poll->data;
  if (socket->polled.closed || socket->failed) return;
  if (status < 0) {
    // libuv stops a poll handle on POLLERR, reporting UV_EBADF. On a connected socket that is
    // mostly an ICMP error the kernel queued (ECONNREFUSED from an upstream restarting, or from
    // anyone who forges one for our port): left stopped, the socket would never read another
    // answer. Take the error (SO_ERROR clears it, or a send already did), report it, and poll
    // again, unless it says the socket is broken (ERROR_CLASSES).
    int error = 0;
    socklen_t length = sizeof error;
    // Where that cannot be read, the poll stays stopped: the socket is deaf from now on, and says so.
    if (getsockopt(socket->polled.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
      fail(socket, errno);
      return;
    }
    // An error the kernel queued (ECONNREFUSED, ...), or a socket it destroyed (ECONNABORTED).
    if (error != 0 && !read_error(socket, error)) return;
    // Not when the handler closed it (the poll handle is closing then), or a send of its failed for good.
    if (socket->polled.closed || socket->failed) return;
    int restart = uv_poll_start(&socket->polled.poll, UV_READABLE, on_readable);
    if (restart != 0) fail(socket, -restart);
    return;
  }
  for (int batch = 0; batch < BATCHES_PER_WAKE && !socket->polled.closed && !socket->failed; batch++) {
    unsigned slots = arena.slots;
    for (unsigned i = 0; i < slots; i++) {
      vectors[i].iov_base = arena.bytes + i * arena.slot_size;
      vectors[i].iov_len = arena.slot_size;
      memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
      messages[i].msg_hdr.msg_iov = &vectors[i];
      messages[i].msg_hdr.msg_iovlen = 1;
      messages[i].msg_hdr.msg_name = &senders[i];
      messages[i].msg_hdr.msg_namelen = sizeof senders[i];
    }
    int count = recvmmsg(socket->polled.fd, messages, slots, MSG_DONTWAIT, NULL);
    if (count < 0) {
      int error = errno;
      // Nothing (more) to read; an ICMP error queued on a connected socket (ECONNREFUSED, ...):
      // reported, and what is queued after it read at the next readiness; or failed for good.
      read_error(socket, error);
      return;
    }
    for (int i = 0; i < count; i++) describe_sender((unsigned)i);
    deliver(socket, count);
    if ((unsigned)count < slots) return;
  }
}

static napi_value socket_watch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  udp_socket *socket = socket_args(env, info, 2, argv);
  if (socket == NULL) return NULL;
  if (arena.bytes == NULL) {
    napi_throw_error(env, "EINVAL", "udp-batch: arena() must be called before watch()");
    return NULL;
  }
  if (socket->polled.callback != NULL) {
    napi_throw_error(env, "EBUSY", "udp-batch: socket already watched");
    return NULL;
  }
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "udp-batch: the callback must be a function");
    return NULL;
  }
  // A send found it broken before it was read: polled, it would wake for whatever is queued for
  // ever (on_readable reads no failed socket), and never say it failed.
  if (socket->failed != 0) return throw_errno(env, socket->failed, "a send found the socket broken");
  if (!polled_socket_watch(env, &socket->polled, argv[1], "spectrum:udp")) return NULL;
  int error = uv_poll_start(&socket->polled.poll, UV_READABLE, on_readable);
  if (error != 0) {
    // Watched but never polled: close() still lets go of the poll handle.
    socket->failed = -error;
    return throw_errno(env, -error, "uv_poll_start");
  }
  return NULL;
}

static int get_bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  napi_typedarray_type type;
  void *base = NULL;
  if (napi_get_typedarray_info(env, value, &type, length, &base, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "EINVAL", "udp-batch: bytes must be a Uint8Array");
    return 0;
  }
  *data = base;
  return 1;
}

// (bytes, offset, length) as JS passes them: `*start` points at the slice, or is NULL when the
// slice does not fit in the bytes. 0: an exception was thrown.
static int get_slice(napi_env env, const napi_value *args, uint8_t **start, uint32_t *length) {
  uint8_t *data = NULL;
  size_t available = 0;
  uint32_t offset = 0;
  if (!get_bytes(env, args[0], &data, &available)) return 0;
  if (napi_get_value_uint32(env, args[1], &offset) != napi_ok || napi_get_value_uint32(env, args[2], length) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "udp-batch: offset and length must be numbers");
    return 0;
  }
  *start = (size_t)offset + *length <= available ? data + offset : NULL;
  return 1;
}

// The bytes sent, or -errno; a fatal errno (ERROR_CLASSES) also stops reading the socket, whose
// failure the caller reports (not from inside its own send: see udp-socket.ts).
static napi_value send_result(napi_env env, udp_socket *socket, ssize_t sent) {
  if (sent >= 0) return number(env, (double)sent);
  int error = errno;
  if (classify(error, 1) == ERROR_FATAL) stop_reading(socket, error);
  return number(env, -error);
}

static napi_value error_class_of(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t error = 0;
  bool sending = false;
  CHECK(napi_get_value_int32(env, argv[0], &error));
  CHECK(napi_get_value_bool(env, argv[1], &sending));
  return number(env, classify(error, sending));
}

static napi_value socket_send(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  udp_socket *socket = socket_args(env, info, 4, argv);
  if (socket == NULL) return NULL;
  uint8_t *data = NULL;
  uint32_t length = 0;
  if (!get_slice(env, argv + 1, &data, &length)) return NULL;
  if (data == NULL) return number(env, -EINVAL);
  return send_result(env, socket, send(socket->polled.fd, data, length, MSG_DONTWAIT));
}

static napi_value socket_send_to(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  udp_socket *socket = socket_args(env, info, 9, argv);
  if (socket == NULL) return NULL;
  uint8_t *data = NULL;
  uint32_t length = 0, port = 0, words[4];
  if (!get_slice(env, argv + 1, &data, &length)) return NULL;
  CHECK(napi_get_value_uint32(env, argv[4], &port));
  for (int i = 0; i < 4; i++) CHECK(napi_get_value_uint32(env, argv[5 + i], &words[i]));
  if (data == NULL || port > 65535) return number(env, -EINVAL);
  struct sockaddr_storage address;
  memset(&address, 0, sizeof address);
  socklen_t address_length;
  if (socket->family == 4) {
    struct sockaddr_in *in4 = (struct sockaddr_in *)&address;
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    in4->sin_addr.s_addr = htonl(words[0]);
    address_length = sizeof *in4;
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    for (int i = 0; i < 4; i++) words[i] = htonl(words[i]);
    memcpy(&in6->sin6_addr, words, sizeof words);
    address_length = sizeof *in6;
  }
  return send_result(env, socket, sendto(socket->polled.fd, data, length, MSG_DONTWAIT, (struct sockaddr *)&address, address_length));
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("arena", arena_set),
      ADDON_FUNCTION("open", socket_open),
      ADDON_FUNCTION("connect", socket_connect),
      ADDON_FUNCTION("bindToIndex", socket_bind_to_index),
      ADDON_FUNCTION("watch", socket_watch),
      ADDON_FUNCTION("send", socket_send),
      ADDON_FUNCTION("sendTo", socket_send_to),
      ADDON_FUNCTION("localPort", socket_local_port),
      ADDON_FUNCTION("tcpConnect", tcp_connect),
      ADDON_FUNCTION("tcpUnacknowledged", tcp_unacknowledged),
      ADDON_FUNCTION("errorClass", error_class_of),
      ADDON_FUNCTION("zoneIndex", zone_index),
      ADDON_FUNCTION("close", polled_socket_close),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
