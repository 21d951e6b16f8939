// Route netlink for spectrum-link and spectrum-netd: a program of requests (and, for the linker,
// tap creations), run in order on a worker thread, each request's answer read before the next is
// sent: the receive buffer never holds more than one answer, so none is ever dropped for want of
// room, and a failure of the socket is a record's result, never an exception in a libuv callback.
//
// Why native: the host steps used to go to `ip -batch`, which resolves every device name with a
// request of its own, and costs a process start (fork of the whole Node process) per batch. Here
// a request names its device itself, a master is resolved with a query on the same socket, and
// the steps run while JS goes on. Names are looked up by route netlink (RTM_GETLINK), never by a
// device ioctl (SIOCGIFINDEX and the like): for a name no device has (one deleted by someone else
// meanwhile), those first try to load a module named after it (dev_load runs modprobe).
// A name the kernel resolves to another device's altname (its lookups by name all take them) is
// no device of that name here: a master or device found so is refused.
//
// JS API (shared/rtnl-socket.ts wraps it):
//   open(netnsPath: string | null) -> handle   NETLINK_ROUTE socket in that network namespace
//       (null: the caller's); throws {code}
//   namespace(handle) -> {dev, ino, cookie} | null   which namespace the socket is in: fstat of
//       the descriptor of the namespace file it was opened in (nsfs: one inode per living
//       namespace), and the namespace's cookie (SO_NETNS_COOKIE, never reused, unlike a freed
//       inode number; null before Linux 5.14); null for the caller's. Throws {code}
//   run(handle, program: Uint8Array, keepGoing: boolean) -> Promise<{errors, texts, replies, spans, marks}>
//   close(handle)   at once where no program runs; else the descriptor is closed when the running
//                   one ends (its records not yet begun are not run), never under its worker
// A program is a list of records: u32 kind, u32 payload length, payload padded to 4 bytes. The
// kind may carry a flag: GONE_GOES_ON (0x100), that a record the kernel refuses with ENODEV (no
// such device: a delete by index whose device is gone already), or an RTM_DELADDR it refuses with
// EADDRNOTAVAIL (that address gone already), is reported so (errors[i], texts[i], MARK_REFUSED),
// and the program goes on as after one done, keepGoing or not. And DOWN_GOES_ON (0x200), that an
// RTM_NEWLINK the kernel refuses with ENETDOWN (a bridge port's STP state other than disabled on a
// port whose device does not run: the kernel holds it disabled, and with STP off forwards on it
// again by itself once it runs) is reported so too, and the program goes on.
//   REQUEST (1)  one netlink message; NLM_F_ACK is added and its seq becomes the socket's next one
//                (a counter: no two requests of a socket's life share one, so a late answer to one
//                that timed out is never taken for another's)
//   TAP     (2)  a NUL-terminated name: a new persistent tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) in
//                the socket's namespace; EBUSY where a device of that name exists (or has it as
//                an altname: the text names that device)
//   ENSLAVE (3)  16 bytes, a NUL-padded master name, then a netlink message to which IFLA_MASTER,
//                the master's index as the socket's namespace knows it, is appended; ENODEV where
//                no device has that name as its own, EOPNOTSUPP where the device that has it is
//                no bridge (a bond or a VRF would take the port too). The index is looked up once
//                for a run of joins to one master; refused (EINVAL) with that index, the master is
//                looked up again, and the join tried once more where its name has another index
//                now, and is a bridge's
//   NO_IPV6 (4)  an s32 ifindex, then a NUL-terminated device name: IPv6 off on it (disable_ipv6,
//                which has no netlink form, by the device's own name) in the socket's namespace;
//                done where IPv6 does not run on it. With an ifindex (not 0), on the device of that
//                index under the name it has now (looked up just before the write: renamed since,
//                it is still the one meant, and another device given its old name is not it),
//                ENODEV where it is gone; without, by the name, ENODEV where no device has it as
//                its own
// Results, per record i: errors[i] 0 done, an errno, or -1 not run (a record before it failed, not
// as its GONE_GOES_ON flag lets it, and keepGoing is false); texts[i] why it failed (strerror and
// the kernel's extended ack; a record timed out or not sent after one, what happened alone: "no
// answer from the kernel within 5 s", "not sent: ..."), else undefined; the messages it was answered with (not the ack) are replies[spans[2i] ..][spans[2i+1] bytes].
// marks[i] says how record i's answer went (MARK_*: a dump marked interrupted, a refusal, an error
// in NLMSG_DONE, a receive error under a dump, a timeout).
// A dump request (NLM_F_DUMP) is answered with every part up to NLMSG_DONE. A datagram of an
// answer that no memory can be had for is read off all the same (discarded), and its record fails
// with ENOMEM saying so: left unread, it would stay first in line for every read after it.
// Only the kernel's datagrams (sender port 0) with the request's seq are answers: any other
// (another socket's, root's in this namespace may send here) is read off and passed over.
// No datagram within ANSWER_TIMEOUT_SECONDS (SO_RCVTIMEO) fails the record as timed out
// (ETIMEDOUT), and the records after it fail unsent: the kernel is not answering, and what a caller
// gave up on is better not sent late. A receive error under a dump (the kernel could not make its
// next part: ENOBUFS, ENOMEM) lets the dump go on: the kernel makes the next part only after a read
// that gets a datagram, so a no-op with an ack is sent to bring one (up to DUMP_NUDGES times in a row); the
// dump is read to its NLMSG_DONE and fails with that errno (MARK_RECEIVE_FAILED). Before each request
// is sent, whatever the socket holds is read off (no answer to it can be there yet), so its answer
// finds the buffer empty; elsewhere ENOBUFS says an answer was dropped all the same, the buffer
// filled meanwhile (by datagrams from someone else, say).
#define _GNU_SOURCE  // setns
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "rtnl"
#include "napi-plumbing.h"
#include "getlink-request.h"
#include "netns-switch.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71 // Linux 5.14; older headers lack it
#endif

#define KIND_REQUEST 1
#define KIND_TAP 2
#define KIND_ENSLAVE 3
#define KIND_NO_IPV6 4
// A record kind's flags (see the top): any other bit makes it a kind that is none (EINVAL).
#define FLAG_GONE_GOES_ON 0x100
#define FLAG_DOWN_GOES_ON 0x200
// The program format (rtnl-socket.ts PROGRAM_FORMAT): 2 from GONE_GOES_ON on, 3 from its address delete on, 4 from DOWN_GOES_ON on.
#define PROGRAM_FORMAT 4
// What a receive buffer starts at: every answer but a device's with a long property list fits.
#define RECEIVE_BYTES 65536
#define TEXT_BYTES 256
// How long a request waits for the next datagram of its answer.
#define ANSWER_TIMEOUT_SECONDS 5
// How many times in a row a dump whose part the kernel could not make is nudged on (see nudge) before it fails.
#define DUMP_NUDGES 16

// marks[i], a record's answer: bits.
#define MARK_INTERRUPTED 1     // a part of its dump came marked NLM_F_DUMP_INTR
#define MARK_REFUSED 2         // failed: the kernel's NLMSG_ERROR
#define MARK_DONE_ERROR 4      // failed: an error in its dump's NLMSG_DONE
#define MARK_RECEIVE_FAILED 8  // failed: the socket failed to receive under its dump (read whole)
#define MARK_TIMED_OUT 16      // failed: no answer within ANSWER_TIMEOUT_SECONDS
#define MARK_NOT_SENT 32       // failed unsent: an earlier record of the program timed out

typedef struct {
  int fd;
  // The namespace the socket was opened in, where not the process's own (-1): taps are made there.
  int netns_fd;
  int busy;
  // close() came while a program ran: the worker stops before its next record, and the
  // descriptors are closed when it is done (read and set across threads).
  int closing;
  // The seq the next request gets (never 0).
  uint32_t next_seq;
} rtnl_socket;

// Where answers are read: grown for a datagram larger than it, and kept so for the run.
typedef struct {
  uint8_t *bytes;
  size_t capacity;
} receive_buffer;

typedef struct {
  rtnl_socket *socket;
  uint8_t *program;
  size_t program_length;
  int keep_going;
  uint32_t records;
  int32_t *errors;
  char (*texts)[TEXT_BYTES];
  int32_t *spans;
  int32_t *marks;
  uint8_t *replies;
  size_t replies_length;
  size_t replies_capacity;
  int setup_error;  // an errno that stopped the run before its first record
  // The socket's handle, held while the job runs: a socket dropped by JS meanwhile is not freed.
  napi_ref handle;
  napi_async_work work;
  napi_deferred deferred;
} rtnl_job;

#define CHECK(call)                                                 \
  do {                                                              \
    if ((call) != napi_ok) {                                        \
      napi_throw_error(env, "EINTERNAL", "rtnl: " #call " failed"); \
      return NULL;                                                  \
    }                                                               \
  } while (0)

static rtnl_socket *socket_of(napi_env env, napi_value handle) {
  void *data = NULL;
  if (napi_get_value_external(env, handle, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "EINVAL", "rtnl: not a socket handle");
    return NULL;
  }
  rtnl_socket *socket = data;
  if (socket->fd < 0 || socket->closing) {
    napi_throw_error(env, "EBADF", "rtnl: socket is closed");
    return NULL;
  }
  return socket;
}

static void finalize_socket(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  rtnl_socket *socket = data;
  if (socket->fd >= 0) close(socket->fd);
  if (socket->netns_fd >= 0) close(socket->netns_fd);
  free(socket);
}

static int configure(int fd) {
  int one = 1;
  // Acks without a copy of the request, with the kernel's explanation of a refusal.
  if (setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one) != 0) return errno;
  if (setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one) != 0) return errno;
  struct timeval timeout = {.tv_sec = ANSWER_TIMEOUT_SECONDS, .tv_usec = 0};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0) return errno;
  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0) return errno;
  return 0;
}

// A socket (SOCK_RAW netlink) or the tun device opened while this thread is in the namespace
// `netns_fd`: both belong to the namespace they were opened in.
static int open_in(int netns_fd, int tun, int *error) {
  int home;
  *error = netns_enter(netns_fd, &home);
  if (*error != 0) return -1;
  int fd = tun ? open("/dev/net/tun", O_RDWR | O_CLOEXEC) : socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) *error = errno;
  netns_leave(home);
  return fd;
}

static napi_value socket_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  napi_valuetype type;
  CHECK(napi_typeof(env, argv[0], &type));
  int fd;
  int netns_fd = -1;
  int error = 0;
  char path[4096];
  if (type == napi_null || type == napi_undefined) {
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) error = errno;
  } else {
    if (!whole_string(env, argv[0], path, sizeof path)) {
      napi_throw_type_error(env, "EINVAL", "rtnl: namespace path must be a string shorter than 4096 bytes, without NUL");
      return NULL;
    }
    netns_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) return throw_errno(env, errno, path);
    fd = open_in(netns_fd, 0, &error);
  }
  if (fd >= 0) error = configure(fd);
  if (fd < 0 || error != 0) {
    if (fd >= 0) close(fd);
    if (netns_fd >= 0) close(netns_fd);
    return throw_errno(env, error, "netlink socket");
  }
  rtnl_socket *socket = calloc(1, sizeof *socket);
  if (socket == NULL) {
    close(fd);
    if (netns_fd >= 0) close(netns_fd);
    return throw_errno(env, ENOMEM, "netlink socket");
  }
  socket->fd = fd;
  socket->netns_fd = netns_fd;
  socket->next_seq = 1;
  napi_value handle;
  if (napi_create_external(env, socket, finalize_socket, NULL, &handle) != napi_ok) {
    close(fd);
    if (netns_fd >= 0) close(netns_fd);
    free(socket);
    napi_throw_error(env, "EINTERNAL", "rtnl: napi_create_external failed");
    return NULL;
  }
  return handle;
}

// Largest integer a JS number holds exactly (2^53 - 1).
#define EXACT_NUMBER_MAX 9007199254740991ULL

static napi_value socket_namespace(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  rtnl_socket *socket = socket_of(env, argv[0]);
  if (socket == NULL) return NULL;
  napi_value result;
  if (socket->netns_fd < 0) {
    CHECK(napi_get_null(env, &result));
    return result;
  }
  if (socket->fd < 0) return throw_errno(env, EBADF, "netlink socket");
  struct stat status;
  if (fstat(socket->netns_fd, &status) != 0) return throw_errno(env, errno, "namespace file");
  // The inode number is the namespace's only while it lives: the kernel gives a freed one to the
  // next namespace made (ip netns del, then add, often gets the same). Its cookie is never given
  // again (a counter); a kernel before 5.14 has none (ENOPROTOOPT): null, the inode alone.
  uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
  int has_cookie = getsockopt(socket->fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) == 0;
  if (!has_cookie && errno != ENOPROTOOPT) return throw_errno(env, errno, "netlink socket");
  // nsfs gives a 32-bit inode number on an anonymous device, the cookie counts namespaces made:
  // all exact as numbers.
  if ((unsigned long long)status.st_dev > EXACT_NUMBER_MAX || (unsigned long long)status.st_ino > EXACT_NUMBER_MAX || cookie > EXACT_NUMBER_MAX) {
    return throw_errno(env, EOVERFLOW, "namespace file");
  }
  napi_value dev, ino, cookie_value;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_double(env, (double)status.st_dev, &dev));
  CHECK(napi_create_double(env, (double)status.st_ino, &ino));
  if (has_cookie) {
    CHECK(napi_create_double(env, (double)cookie, &cookie_value));
  } else {
    CHECK(napi_get_null(env, &cookie_value));
  }
  CHECK(napi_set_named_property(env, result, "dev", dev));
  CHECK(napi_set_named_property(env, result, "ino", ino));
  CHECK(napi_set_named_property(env, result, "cookie", cookie_value));
  return result;
}

static void close_descriptors(rtnl_socket *socket) {
  if (socket->fd >= 0) close(socket->fd);
  socket->fd = -1;
  if (socket->netns_fd >= 0) close(socket->netns_fd);
  socket->netns_fd = -1;
}

static napi_value socket_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  void *data = NULL;
  if (napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL) return NULL;
  rtnl_socket *socket = data;
  if (socket->busy) {
    __atomic_store_n(&socket->closing, 1, __ATOMIC_RELAXED);  // closed by run_complete
  } else {
    close_descriptors(socket);
  }
  return NULL;
}

static void fail(rtnl_job *job, uint32_t index, int error, const char *detail) {
  job->errors[index] = error;
  // A record the kernel left unanswered, or not sent after one: the detail says what happened
  // (strerror's "Connection timed out" is about connections, which this is not).
  if (error == ETIMEDOUT && (job->marks[index] & (MARK_TIMED_OUT | MARK_NOT_SENT)) && detail != NULL && detail[0] != '\0') {
    snprintf(job->texts[index], TEXT_BYTES, "%s", detail);
  } else if (detail != NULL && detail[0] != '\0') {
    snprintf(job->texts[index], TEXT_BYTES, "%s: %s", strerror(error), detail);
  } else {
    snprintf(job->texts[index], TEXT_BYTES, "%s", strerror(error));
  }
}

static int keep_reply(rtnl_job *job, const struct nlmsghdr *message) {
  size_t length = NLMSG_ALIGN(message->nlmsg_len);
  if (job->replies_length + length > job->replies_capacity) {
    size_t capacity = job->replies_capacity == 0 ? RECEIVE_BYTES : job->replies_capacity;
    while (capacity < job->replies_length + length) capacity *= 2;
    uint8_t *grown = realloc(job->replies, capacity);
    if (grown == NULL) return ENOMEM;
    job->replies = grown;
    job->replies_capacity = capacity;
  }
  memcpy(job->replies + job->replies_length, message, message->nlmsg_len);
  memset(job->replies + job->replies_length + message->nlmsg_len, 0, length - message->nlmsg_len);
  job->replies_length += length;
  return 0;
}

// The extended ack's message of an NLMSG_ERROR, if any, into `text`.
static void ack_message(const struct nlmsghdr *message, char *text, size_t size) {
  text[0] = '\0';
  if (!(message->nlmsg_flags & NLM_F_ACK_TLVS)) return;
  const struct nlmsgerr *error = NLMSG_DATA(message);
  size_t offset = NLMSG_HDRLEN + sizeof *error;
  if (!(message->nlmsg_flags & NLM_F_CAPPED)) offset += error->msg.nlmsg_len - NLMSG_HDRLEN;
  while (offset + NLA_HDRLEN <= message->nlmsg_len) {
    const struct nlattr *attribute = (const struct nlattr *)((const uint8_t *)message + offset);
    if (attribute->nla_len < NLA_HDRLEN || offset + attribute->nla_len > message->nlmsg_len) return;
    if ((attribute->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      size_t length = attribute->nla_len - NLA_HDRLEN;
      if (length >= size) length = size - 1;
      memcpy(text, (const uint8_t *)attribute + NLA_HDRLEN, length);
      text[length] = '\0';
      size_t end = strnlen(text, length);
      while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '.')) text[--end] = '\0';
      return;
    }
    offset += NLA_ALIGN(attribute->nla_len);
  }
}

// The next datagram of the kernel's on the socket, read whole into `receive` (grown where it is
// larger); its length, or -1 with errno set (EAGAIN: none within ANSWER_TIMEOUT_SECONDS). A
// device's answer passes 64 KiB where its altnames fill its property list (the kernel lets that
// take up to 64 KiB): its size and sender are asked first (a peek that copies nothing), so that no
// datagram is ever cut short. One from anyone but the kernel (sender port 0) is read off into
// nothing (a read takes a datagram off the socket, however little it copies) and passed over.
// Where the buffer cannot grow to one, it is read off so too, so that the next read gets the next
// one; -1 with ENOMEM, its size in *discarded.
static ssize_t receive_whole(int fd, receive_buffer *receive, size_t *discarded) {
  for (;;) {
    struct sockaddr_nl sender;
    socklen_t sender_length = sizeof sender;
    ssize_t size;
    do {
      memset(&sender, 0, sizeof sender);
      sender_length = sizeof sender;
      size = recvfrom(fd, NULL, 0, MSG_PEEK | MSG_TRUNC, (struct sockaddr *)&sender, &sender_length);
    } while (size < 0 && errno == EINTR);
    if (size < 0) return -1;
    int from_kernel = sender_length >= sizeof sender && sender.nl_family == AF_NETLINK && sender.nl_pid == 0;
    if (!from_kernel || (size_t)size > receive->capacity) {
      uint8_t *grown = from_kernel ? realloc(receive->bytes, (size_t)size) : NULL;
      if (grown == NULL) {
        ssize_t dropped;
        do dropped = recv(fd, NULL, 0, MSG_TRUNC);
        while (dropped < 0 && errno == EINTR);
        if (dropped < 0) return -1;
        if (!from_kernel) continue;
        *discarded = (size_t)size;
        errno = ENOMEM;
        return -1;
      }
      receive->bytes = grown;
      receive->capacity = (size_t)size;
    }
    ssize_t received;
    do {
      sender_length = sizeof sender;
      received = recvfrom(fd, receive->bytes, receive->capacity, MSG_TRUNC, (struct sockaddr *)&sender, &sender_length);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    if (received > (ssize_t)receive->capacity || sender.nl_pid != 0) {
      errno = EMSGSIZE;  // not the datagram peeked at: nothing else reads this socket meanwhile
      return -1;
    }
    return received;
  }
}

// What a kind (IFLA_INFO_KIND) is kept to: every kind the kernel has is far shorter.
#define KIND_BYTES 32

// A device as a lookup's answer gives it: its index, its own name (empty until answered) and its
// kind (IFLA_INFO_KIND: "bridge", "bond", ...; empty for one without link info, as an ethernet).
typedef struct {
  int index;
  char name[IFNAMSIZ];
  char kind[KIND_BYTES];
} found_link;

// No device: what a lookup starts from, and a master not (or no longer) known is.
#define NO_LINK ((found_link){.index = 0, .name = "", .kind = ""})

// The kind an IFLA_LINKINFO attribute gives (its IFLA_INFO_KIND) into `kind`; left as it is without one.
static void read_kind(const struct rtattr *linkinfo, char *kind) {
  int left = (int)RTA_PAYLOAD(linkinfo);
  for (const struct rtattr *attribute = RTA_DATA(linkinfo); RTA_OK(attribute, left); attribute = RTA_NEXT(attribute, left)) {
    if ((attribute->rta_type & NLA_TYPE_MASK) != IFLA_INFO_KIND) continue;
    size_t bytes = strnlen(RTA_DATA(attribute), RTA_PAYLOAD(attribute));
    if (bytes >= KIND_BYTES) bytes = KIND_BYTES - 1;
    memcpy(kind, RTA_DATA(attribute), bytes);
    kind[bytes] = '\0';
    return;
  }
}

// The index, own name and kind of an RTM_NEWLINK message into `found`.
static void read_link(const struct nlmsghdr *message, found_link *found) {
  if (message->nlmsg_type != RTM_NEWLINK || message->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) return;
  const struct ifinfomsg *info = NLMSG_DATA(message);
  int left = (int)(message->nlmsg_len - NLMSG_LENGTH(sizeof *info));
  char name[IFNAMSIZ] = "";
  char kind[KIND_BYTES] = "";
  for (const struct rtattr *attribute = IFLA_RTA(info); RTA_OK(attribute, left); attribute = RTA_NEXT(attribute, left)) {
    if ((attribute->rta_type & NLA_TYPE_MASK) == IFLA_LINKINFO) {
      read_kind(attribute, kind);
    } else if (attribute->rta_type == IFLA_IFNAME) {
      size_t bytes = strnlen(RTA_DATA(attribute), RTA_PAYLOAD(attribute));
      if (bytes >= IFNAMSIZ) return;
      memcpy(name, RTA_DATA(attribute), bytes);
      name[bytes] = '\0';
    }
  }
  if (name[0] == '\0') return;
  memcpy(found->name, name, sizeof name);
  memcpy(found->kind, kind, sizeof kind);
  found->index = info->ifi_index;
}

// Ask the kernel for an ack of nothing (NLMSG_NOOP), under a seq of its own: a datagram to read,
// after which the kernel makes the next part of a dump it could not make before. 0 or an errno.
static int nudge(rtnl_socket *socket) {
  struct nlmsghdr noop = {.nlmsg_len = NLMSG_HDRLEN, .nlmsg_type = NLMSG_NOOP, .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK, .nlmsg_seq = socket->next_seq++};
  if (socket->next_seq == 0) socket->next_seq = 1;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do sent = sendto(socket->fd, &noop, sizeof noop, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  return sent < 0 ? errno : 0;
}

// Send one request and read until its ack (or the end of its dump); 0 or an errno, with detail,
// and how it went in the record's marks. The answers are kept as the record's replies, or, with
// `found` (a lookup of the program's own), read into it instead.
static int exchange(rtnl_job *job, uint32_t index, uint8_t *message, size_t length, receive_buffer *receive, char *detail, found_link *found) {
  struct nlmsghdr *header = (struct nlmsghdr *)message;
  rtnl_socket *socket = job->socket;
  uint32_t seq = socket->next_seq++;
  if (socket->next_seq == 0) socket->next_seq = 1;
  int32_t *mark = &job->marks[index];
  header->nlmsg_seq = seq;
  header->nlmsg_pid = 0;
  header->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  int dump = (header->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  // Whatever the socket holds now is no answer to this request (a late answer to one that timed
  // out, someone else's datagram): read off, so that the answer finds the buffer empty, never
  // dropped for want of room. A socket error pending (a drop meanwhile) is stale too.
  for (;;) {
    ssize_t stale = recv(socket->fd, NULL, 0, MSG_DONTWAIT | MSG_TRUNC);
    if (stale < 0 && errno != EINTR && errno != ENOBUFS && errno != ENOMEM) break;
  }
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do sent = sendto(socket->fd, message, length, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;
  int receive_error = 0;  // under a dump: the socket's error, the dump going on
  int nudges = 0;
  for (;;) {
    size_t discarded = 0;
    ssize_t received = receive_whole(socket->fd, receive, &discarded);
    if (received < 0) {
      int error = errno;
      if (discarded > 0) {
        snprintf(detail, TEXT_BYTES / 2, "no memory to read the kernel's answer of %zu bytes, which was discarded", discarded);
      } else if (error == EAGAIN || error == EWOULDBLOCK) {
        *mark |= MARK_TIMED_OUT;
        snprintf(detail, TEXT_BYTES / 2, "no answer from the kernel within %d s", ANSWER_TIMEOUT_SECONDS);
        return ETIMEDOUT;
      } else if (dump && (error == ENOBUFS || error == ENOMEM)) {
        // The kernel could not make the dump's next part. It makes the next one only after a read
        // that gets a datagram (netlink_recvmsg), and none is coming: a no-op with an ack asked
        // for (its own seq, passed over below) brings one, and the dump goes on.
        receive_error = error;
        int unsent = nudges < DUMP_NUDGES ? nudge(socket) : 0;
        if (nudges < DUMP_NUDGES && unsent == 0) {
          nudges++;
          continue;
        }
        // Given up on: failed as a dump the socket could not receive whole (taken again by netd).
        *mark |= MARK_RECEIVE_FAILED;
        if (unsent != 0) {
          // At most 127 bytes: "No buffer space available" fits, with its closing parenthesis.
          snprintf(detail, TEXT_BYTES / 2, "the kernel could not make a part of the dump, and the no-op to bring it on could not be sent (%s)", strerror(unsent));
        } else {
          snprintf(detail, TEXT_BYTES / 2, "the kernel could not make a part of the dump %d times in a row", DUMP_NUDGES);
        }
        return error;
      } else if (error == ENOBUFS) {
        snprintf(detail, TEXT_BYTES / 2, "the kernel dropped an answer, the socket's receive buffer full; the change may have been made");
      }
      return error;
    }
    int left = (int)received;  // signed: an unpadded last message takes it below 0, which NLMSG_OK ends on
    for (struct nlmsghdr *reply = (struct nlmsghdr *)receive->bytes; NLMSG_OK(reply, left); reply = NLMSG_NEXT(reply, left)) {
      if (reply->nlmsg_seq != seq) continue;  // a late answer to an earlier request, a nudge's ack
      nudges = 0;  // a part of the dump came: its failures are counted in a row
      if (reply->nlmsg_flags & NLM_F_DUMP_INTR) *mark |= MARK_INTERRUPTED;
      if (reply->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *error = NLMSG_DATA(reply);
        if (reply->nlmsg_len < NLMSG_LENGTH(sizeof *error)) return EPROTO;
        if (error->error == 0 && !dump) return 0;
        if (error->error != 0) {
          *mark |= MARK_REFUSED;
          ack_message(reply, detail, TEXT_BYTES / 2);
          return -error->error;
        }
        continue;  // a dump's ack comes after its NLMSG_DONE
      }
      if (reply->nlmsg_type == NLMSG_DONE) {
        int status = 0;
        if (reply->nlmsg_len >= NLMSG_LENGTH(sizeof status)) memcpy(&status, NLMSG_DATA(reply), sizeof status);
        if (status != 0) {
          *mark |= MARK_DONE_ERROR;
          return -status;
        }
        if (receive_error != 0) {
          *mark |= MARK_RECEIVE_FAILED;
          snprintf(detail, TEXT_BYTES / 2, "the socket failed to receive under the dump (the kernel could not make a part of it)");
          return receive_error;
        }
        // Its ack (NLM_F_ACK on a dump) may follow in the same or the next read; none is needed.
        return 0;
      }
      if (found != NULL) {
        read_link(reply, found);
        continue;
      }
      int error = keep_reply(job, reply);
      if (error != 0) return error;
    }
  }
}

// Look `name` up on the job's socket (RTM_GETLINK by IFLA_IFNAME, statistics left out): 0 with
// the device it resolves to (by its own name or an altname) in `found`, or an errno (ENODEV: no
// device has that name) with the kernel's detail. No module is loaded for a missing name.
static int lookup_link(rtnl_job *job, uint32_t index, const char *name, receive_buffer *receive, char *detail, found_link *found) {
  size_t bytes = strnlen(name, IFNAMSIZ);
  if (bytes == 0 || bytes >= IFNAMSIZ) return EINVAL;
  getlink_request request;
  getlink_request_by_name(&request, name);
  *found = NO_LINK;
  int error = exchange(job, index, request.bytes, request.header.nlmsg_len, receive, detail, found);
  if (error == 0 && found->name[0] == '\0') error = EPROTO;  // acknowledged without the device
  return error;
}

// Look the device with index `ifindex` up on the job's socket: 0 with its own name in `found`,
// or an errno (ENODEV: no device has that index) with the kernel's detail.
static int lookup_link_by_index(rtnl_job *job, uint32_t index, int ifindex, receive_buffer *receive, char *detail, found_link *found) {
  getlink_request request;
  getlink_request_by_index(&request, ifindex);
  *found = NO_LINK;
  int error = exchange(job, index, request.bytes, request.header.nlmsg_len, receive, detail, found);
  if (error == 0 && (found->name[0] == '\0' || found->index != ifindex)) error = EPROTO;  // acknowledged without the device
  return error;
}

static int create_tap(const rtnl_socket *socket, const char *name) {
  if (strlen(name) >= IFNAMSIZ) return EINVAL;  // the kernel would cut it short, not refuse it
  int error = 0;
  int fd = socket->netns_fd >= 0 ? open_in(socket->netns_fd, 1, &error) : open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return socket->netns_fd >= 0 ? error : errno;
  struct ifreq request;
  memset(&request, 0, sizeof request);
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  // IFF_TUN_EXCL: a tap of that name made since the plan looked is refused (EBUSY), not joined;
  // joined, it would count as made by this run and be deleted by its undo. So is a device that
  // has the name as an altname (TUNSETIFF looks names up as the kernel does, altnames too).
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL;
  if (ioctl(fd, TUNSETIFF, &request) != 0 || ioctl(fd, TUNSETPERSIST, 1) != 0) error = errno;
  close(fd);
  return error;
}

// Why a tap could not be made where a device has its name (EBUSY): that device's own name or an
// altname, as a lookup tells.
static void name_taken(rtnl_job *job, uint32_t index, const char *name, receive_buffer *receive, char *detail) {
  found_link found;
  char ignored[TEXT_BYTES / 2] = "";
  if (lookup_link(job, index, name, receive, ignored, &found) == 0 && strcmp(found.name, name) != 0) {
    snprintf(detail, TEXT_BYTES / 2, "device %s has that name as an altname", found.name);
  } else {
    snprintf(detail, TEXT_BYTES / 2, "a device of that name exists");
  }
}

// Whether `name` can be a device's own directory under /proc/sys/net/ipv6/conf: not "all" or
// "default" (which would turn IPv6 off namespace-wide), nor a path.
static int conf_name(const char *name) {
  return strlen(name) < IFNAMSIZ && strchr(name, '/') == NULL && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && strcmp(name, "all") != 0 &&
         strcmp(name, "default") != 0;
}

// /proc/sys/net shows a thread the namespace it is in when it opens a file there; its
// directories are named after devices' own names (never altnames). Device `name`'s disable_ipv6
// opened for writing in the socket's namespace: a descriptor, or -1 with *error (ENOENT: no such
// file; then *ipv6 says whether the namespace has IPv6 at all).
static int open_disable_ipv6(const rtnl_socket *socket, const char *name, int *error, int *ipv6) {
  char path[64];
  snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
  int home = -1;
  *ipv6 = 1;
  *error = socket->netns_fd >= 0 ? netns_enter(socket->netns_fd, &home) : 0;
  if (*error != 0) return -1;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) *error = errno;
  if (*error == ENOENT) *ipv6 = access("/proc/sys/net/ipv6/conf", F_OK) == 0;
  if (home >= 0) netns_leave(home);
  return fd;
}

static int disable_ipv6(rtnl_job *job, uint32_t index, const char *name, receive_buffer *receive, char *detail) {
  if (!conf_name(name)) return EINVAL;
  int error = 0, ipv6 = 1;
  int fd = open_disable_ipv6(job->socket, name, &error, &ipv6);
  if (fd >= 0) {
    if (write(fd, "1", 1) != 1) error = errno;
    close(fd);
    return error;
  }
  if (error != ENOENT) return error;
  // No IPv6 to turn off: none in this kernel (no conf directory at all), or none on this device
  // (the kernel takes it away below an MTU of 1280, and gives it back above). Else there is no
  // such device: asked on the socket, by route netlink, which loads no module for a missing name.
  if (!ipv6) return 0;
  found_link found;
  char said[TEXT_BYTES / 2] = "";
  error = lookup_link(job, index, name, receive, said, &found);
  if (error == ENODEV) return ENODEV;
  if (error != 0) {
    snprintf(detail, TEXT_BYTES / 2, "looking %s up%s%.*s", name, said[0] != '\0' ? ": " : "", TEXT_BYTES / 4, said);
    return error;
  }
  if (strcmp(found.name, name) != 0) {
    snprintf(detail, TEXT_BYTES / 2, "%s is an altname of device %s, not a device's own name", name, found.name);
    return ENODEV;
  }
  return 0;
}

// The own name of device `ifindex` (seen as `seen`), looked up for disable_ipv6_by_index.
static int current_name(rtnl_job *job, uint32_t index, const char *seen, int ifindex, receive_buffer *receive, char *detail, found_link *found) {
  char said[TEXT_BYTES / 2] = "";
  int error = lookup_link_by_index(job, index, ifindex, receive, said, found);
  if (error == ENODEV) {
    snprintf(detail, TEXT_BYTES / 2, "device %.*s (ifindex %d), there when the plan looked, is gone", IFNAMSIZ, seen, ifindex);
  } else if (error != 0) {
    snprintf(detail, TEXT_BYTES / 2, "looking %.*s up by its ifindex %d%s%.*s", IFNAMSIZ, seen, ifindex, said[0] != '\0' ? ": " : "", TEXT_BYTES / 4, said);
  }
  return error;
}

// How many times a device renamed under disable_ipv6_by_index is looked up anew.
#define RENAME_RETRIES 4

// IPv6 off on the device with index `ifindex` (seen as `seen`), under whatever name it has now:
// its file is opened under the name a lookup by index gives, and written only where a second
// lookup gives the same name. The file opened then is that device's: were it another's that had
// the name at the open, that one was renamed (or deleted) since, which takes its file away (a
// write fails ENOENT), and this one is looked up again. So are a rename between lookup and open.
static int disable_ipv6_by_index(rtnl_job *job, uint32_t index, const char *seen, int ifindex, receive_buffer *receive, char *detail) {
  for (int attempt = 0; attempt < RENAME_RETRIES; attempt++) {
    found_link found, again;
    int error = current_name(job, index, seen, ifindex, receive, detail, &found);
    if (error != 0) return error;
    if (!conf_name(found.name)) return EINVAL;
    int ipv6 = 1;
    int fd = open_disable_ipv6(job->socket, found.name, &error, &ipv6);
    if (fd < 0 && error != ENOENT) return error;
    if (fd < 0 && !ipv6) return 0;  // no IPv6 in this kernel
    error = current_name(job, index, seen, ifindex, receive, detail, &again);
    if (error != 0 || strcmp(again.name, found.name) != 0) {
      if (fd >= 0) close(fd);
      if (error != 0) return error;
      continue;  // renamed meanwhile
    }
    if (fd < 0) return 0;  // no IPv6 on it: below an MTU of 1280
    error = write(fd, "1", 1) == 1 ? 0 : errno;
    close(fd);
    if (error != ENOENT) return error;
  }
  snprintf(detail, TEXT_BYTES / 2, "device %.*s (ifindex %d) was renamed again and again while its IPv6 was turned off", IFNAMSIZ, seen, ifindex);
  return EAGAIN;
}

// Whether a device looked up as master `name` is one a port may join: a bridge under that name
// as its own. 0, or an errno with why in `detail`: ENODEV where the name is another device's
// altname; EOPNOTSUPP where the device is of another kind (made under the bridge's name by
// someone else since the plan looked: a bond or a VRF takes ports too, and the port would be
// joined to it).
static int usable_master(const found_link *master, const char *name, char *detail) {
  if (strcmp(master->name, name) != 0) {
    snprintf(detail, TEXT_BYTES / 2, "master %s is an altname of device %s, not a device's own name", name, master->name);
    return ENODEV;
  }
  if (strcmp(master->kind, "bridge") != 0) {
    if (master->kind[0] == '\0') {
      snprintf(detail, TEXT_BYTES / 2, "master %s (ifindex %d) is a device of no link kind (a physical one, say), not a bridge", name, master->index);
    } else {
      snprintf(detail, TEXT_BYTES / 2, "master %s (ifindex %d) is a device of kind %s, not a bridge", name, master->index, master->kind);
    }
    return EOPNOTSUPP;
  }
  return 0;
}

static void run_execute(napi_env env, void *data) {
  (void)env;
  rtnl_job *job = data;
  receive_buffer receive = {.bytes = malloc(RECEIVE_BYTES), .capacity = RECEIVE_BYTES};
  uint8_t *scratch = malloc(job->program_length + 16);
  if (receive.bytes == NULL || scratch == NULL) {
    job->setup_error = ENOMEM;
    free(receive.bytes);
    free(scratch);
    return;
  }
  int failed = 0;
  size_t offset = 0;
  // The master last looked up, by its own name: a link's two ports join its bridge a record or
  // two apart, so each bridge is looked up once per program (a lookup is a round trip).
  found_link last_master = {.index = 0, .name = ""};
  int timed_out = 0;
  for (uint32_t index = 0; index < job->records; index++) {
    uint32_t kind, length;
    memcpy(&kind, job->program + offset, 4);
    memcpy(&length, job->program + offset + 4, 4);
    uint32_t flags = kind & (FLAG_GONE_GOES_ON | FLAG_DOWN_GOES_ON);
    kind &= ~(uint32_t)(FLAG_GONE_GOES_ON | FLAG_DOWN_GOES_ON);
    uint8_t *payload = job->program + offset + 8;
    offset += 8 + ((length + 3) & ~3u);
    job->spans[2 * index] = (int32_t)job->replies_length;
    if ((failed && !job->keep_going) || __atomic_load_n(&job->socket->closing, __ATOMIC_RELAXED)) {
      job->errors[index] = -1;
      continue;
    }
    if (timed_out) {
      job->marks[index] = MARK_NOT_SENT;
      fail(job, index, ETIMEDOUT, "not sent: the kernel left an earlier request of its batch unanswered");
      continue;
    }
    char detail[TEXT_BYTES / 2] = "";
    int error = 0;
    if (kind == KIND_TAP) {
      error = strnlen((const char *)payload, length) < length ? create_tap(job->socket, (const char *)payload) : EINVAL;
      if (error == EBUSY) name_taken(job, index, (const char *)payload, &receive, detail);
    } else if (kind == KIND_NO_IPV6) {
      int32_t ifindex = 0;
      const char *name = (const char *)payload + sizeof ifindex;
      if (length > sizeof ifindex) memcpy(&ifindex, payload, sizeof ifindex);
      if (length <= sizeof ifindex || strnlen(name, length - sizeof ifindex) == length - sizeof ifindex || ifindex < 0) {
        error = EINVAL;
      } else {
        error = ifindex > 0 ? disable_ipv6_by_index(job, index, name, ifindex, &receive, detail) : disable_ipv6(job, index, name, &receive, detail);
      }
    } else if (kind == KIND_REQUEST) {
      memcpy(scratch, payload, length);
      error = length >= NLMSG_HDRLEN ? exchange(job, index, scratch, length, &receive, detail, NULL) : EINVAL;
      // A device deleted: its name may come back on another one.
      if (length >= NLMSG_HDRLEN && ((const struct nlmsghdr *)scratch)->nlmsg_type == RTM_DELLINK) last_master = NO_LINK;
    } else if (kind == KIND_ENSLAVE && length >= IFNAMSIZ + NLMSG_HDRLEN) {
      char master_name[IFNAMSIZ];
      memcpy(master_name, payload, IFNAMSIZ - 1);
      master_name[IFNAMSIZ - 1] = '\0';
      found_link master = last_master;
      char said[TEXT_BYTES / 2] = "";
      // The master is a bridge this program made or the plan found, unless someone deleted it
      // meanwhile: looked up so that no module is loaded for its name then.
      int cached = last_master.index != 0 && strcmp(last_master.name, master_name) == 0;
      if (!cached) error = lookup_link(job, index, master_name, &receive, said, &master);
      if (error == 0) error = usable_master(&master, master_name, detail);
      last_master = error == 0 ? master : NO_LINK;
      if (error != 0 && detail[0] == '\0') {
        int more = error != ENODEV && said[0] != '\0';
        snprintf(detail, sizeof detail, "master %s%s%.*s", master_name, more ? ": " : "", (int)(sizeof detail - 32), more ? said : "");
      } else if (error == 0) {
        size_t message_length = length - IFNAMSIZ;
        memcpy(scratch, payload + IFNAMSIZ, message_length);
        struct nlmsghdr *header = (struct nlmsghdr *)scratch;
        // IFLA_MASTER goes after the message as its header measures it: within the record only
        // (scratch has room for it there), whatever a program says.
        if (header->nlmsg_len < NLMSG_HDRLEN || header->nlmsg_len > message_length) {
          error = EINVAL;
          snprintf(detail, sizeof detail, "a join record whose message length (%u) is not within it (%zu bytes)", header->nlmsg_len, message_length);
        } else {
          struct nlattr *master_attribute = (struct nlattr *)(scratch + NLMSG_ALIGN(header->nlmsg_len));
          master_attribute->nla_type = IFLA_MASTER;
          master_attribute->nla_len = NLA_HDRLEN + sizeof(uint32_t);
          uint32_t master_index = (uint32_t)master.index;
          memcpy((uint8_t *)master_attribute + NLA_HDRLEN, &master_index, sizeof master_index);
          header->nlmsg_len = NLMSG_ALIGN(header->nlmsg_len) + NLA_ALIGN(master_attribute->nla_len);
          error = exchange(job, index, scratch, header->nlmsg_len, &receive, detail, NULL);
          // The kernel refuses an index no device has only with EINVAL: a master looked up for an
          // earlier port may have been deleted and made anew under its name meanwhile (by
          // someone else). Looked up again, once: where its own name has another index now, the
          // join is tried again with that, once, if it is a bridge (a bond or a VRF made under
          // its name would take the port too). Gone, or the same, the refusal stands.
          found_link fresh;
          char ignored[TEXT_BYTES / 2] = "";
          if (error == EINVAL && cached && lookup_link(job, index, master_name, &receive, ignored, &fresh) == 0 && strcmp(fresh.name, master_name) == 0 &&
              fresh.index != master.index) {
            job->marks[index] = 0;  // the refusal is not this record's outcome
            detail[0] = '\0';
            error = usable_master(&fresh, master_name, detail);
            if (error == 0) {
              master = fresh;
              master_index = (uint32_t)master.index;
              memcpy((uint8_t *)master_attribute + NLA_HDRLEN, &master_index, sizeof master_index);
              error = exchange(job, index, scratch, header->nlmsg_len, &receive, detail, NULL);
            }
          }
        }
        last_master = error == 0 ? master : NO_LINK;  // it may be gone
      }
    } else {
      error = EINVAL;
    }
    job->spans[2 * index + 1] = (int32_t)(job->replies_length - (size_t)job->spans[2 * index]);
    if (error != 0) {
      fail(job, index, error, detail);
      // Its device gone, as the record's flag allows: said, and the program goes on (one program
      // for a plan whatever devices went meanwhile, not one more per device gone).
      uint16_t type = 0;
      if (kind == KIND_REQUEST && length >= NLMSG_HDRLEN) memcpy(&type, payload + offsetof(struct nlmsghdr, nlmsg_type), sizeof type);
      int gone = (flags & FLAG_GONE_GOES_ON) && (error == ENODEV || (error == EADDRNOTAVAIL && type == RTM_DELADDR)) && (job->marks[index] & MARK_REFUSED);
      int down = (flags & FLAG_DOWN_GOES_ON) && error == ENETDOWN && type == RTM_NEWLINK && (job->marks[index] & MARK_REFUSED);
      if (down) gone = 1;
      if (!gone) failed = 1;
      if (job->marks[index] & MARK_TIMED_OUT) timed_out = 1;
    }
  }
  free(receive.bytes);
  free(scratch);
}

static void free_job(rtnl_job *job) {
  free(job->program);
  free(job->errors);
  free(job->texts);
  free(job->spans);
  free(job->marks);
  free(job->replies);
  free(job);
}

static napi_value int32_array(napi_env env, const int32_t *values, size_t count) {
  void *bytes = NULL;
  napi_value buffer, array;
  if (napi_create_arraybuffer(env, count * sizeof(int32_t), &bytes, &buffer) != napi_ok) return NULL;
  if (count > 0) memcpy(bytes, values, count * sizeof(int32_t));
  if (napi_create_typedarray(env, napi_int32_array, count, buffer, 0, &array) != napi_ok) return NULL;
  return array;
}

static void run_complete(napi_env env, napi_status status, void *data) {
  rtnl_job *job = data;
  job->socket->busy = 0;
  // A close() that came while this ran: its worker is done with the descriptors now.
  if (job->socket->closing) close_descriptors(job->socket);
  napi_value result = NULL, errors = NULL, texts = NULL, replies = NULL, spans = NULL, marks = NULL;
  if (status == napi_ok && job->setup_error == 0) {
    errors = int32_array(env, job->errors, job->records);
    spans = int32_array(env, job->spans, 2 * (size_t)job->records);
    marks = int32_array(env, job->marks, job->records);
    void *copy = NULL;
    if (napi_create_buffer_copy(env, job->replies_length, job->replies_length > 0 ? job->replies : (const void *)"", &copy, &replies) != napi_ok) replies = NULL;
    if (napi_create_array_with_length(env, job->records, &texts) == napi_ok) {
      for (uint32_t index = 0; index < job->records; index++) {
        if (job->errors[index] <= 0) continue;
        napi_value text;
        napi_create_string_utf8(env, job->texts[index], NAPI_AUTO_LENGTH, &text);
        napi_set_element(env, texts, index, text);
      }
    }
    if (errors != NULL && spans != NULL && marks != NULL && replies != NULL && texts != NULL && napi_create_object(env, &result) == napi_ok) {
      napi_set_named_property(env, result, "marks", marks);
      napi_set_named_property(env, result, "errors", errors);
      napi_set_named_property(env, result, "texts", texts);
      napi_set_named_property(env, result, "replies", replies);
      napi_set_named_property(env, result, "spans", spans);
    }
  }
  if (result != NULL) {
    napi_resolve_deferred(env, job->deferred, result);
  } else {
    int error = job->setup_error != 0 ? job->setup_error : ENOMEM;
    napi_value code, text, exception;
    napi_create_string_utf8(env, strerrorname_np(error), NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(error), NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, code, text, &exception);
    napi_set_named_property(env, exception, "code", code);
    napi_reject_deferred(env, job->deferred, exception);
  }
  napi_delete_async_work(env, job->work);
  napi_delete_reference(env, job->handle);
  free_job(job);
}

// Count the records of a program; 0 with *valid = 0 when they do not fit it exactly.
static uint32_t count_records(const uint8_t *program, size_t length, int *valid) {
  uint32_t records = 0;
  size_t offset = 0;
  while (offset + 8 <= length) {
    uint32_t record_length;
    memcpy(&record_length, program + offset + 4, 4);
    size_t next = offset + 8 + ((record_length + 3) & ~3u);
    if (next > length || record_length > length) break;
    offset = next;
    records++;
  }
  *valid = offset == length;
  return records;
}

static napi_value socket_run(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  rtnl_socket *socket = socket_of(env, argv[0]);
  if (socket == NULL) return NULL;
  if (socket->busy) {
    napi_throw_error(env, "EBUSY", "rtnl: a program is already running on this socket");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0, byte_offset = 0;
  void *bytes = NULL;
  napi_value array_buffer;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &bytes, &array_buffer, &byte_offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "EINVAL", "rtnl: the program must be a Uint8Array");
    return NULL;
  }
  bool keep_going = false;
  CHECK(napi_get_value_bool(env, argv[2], &keep_going));
  int valid = 0;
  uint32_t records = count_records(bytes, length, &valid);
  if (!valid) {
    napi_throw_type_error(env, "EINVAL", "rtnl: the program's records do not add up to its length");
    return NULL;
  }
  rtnl_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "rtnl run");
  job->socket = socket;
  job->keep_going = keep_going;
  job->records = records;
  job->program_length = length;
  job->program = malloc(length > 0 ? length : 1);
  job->errors = calloc(records > 0 ? records : 1, sizeof *job->errors);
  job->texts = calloc(records > 0 ? records : 1, sizeof *job->texts);
  job->spans = calloc(records > 0 ? 2 * (size_t)records : 1, sizeof *job->spans);
  job->marks = calloc(records > 0 ? records : 1, sizeof *job->marks);
  if (job->program == NULL || job->errors == NULL || job->texts == NULL || job->spans == NULL || job->marks == NULL) {
    free_job(job);
    return throw_errno(env, ENOMEM, "rtnl run");
  }
  if (length > 0) memcpy(job->program, bytes, length);
  napi_value promise = NULL, name;
  const char *failed = NULL;
  if (napi_create_reference(env, argv[0], 1, &job->handle) != napi_ok) {
    free_job(job);
    napi_throw_error(env, "EINTERNAL", "rtnl: napi_create_reference failed");
    return NULL;
  }
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    failed = "rtnl: napi_create_promise failed";
  } else if (napi_create_string_utf8(env, "rtnl.run", NAPI_AUTO_LENGTH, &name) != napi_ok) {
    failed = "rtnl: napi_create_string_utf8 failed";
  } else if (napi_create_async_work(env, NULL, name, run_execute, run_complete, job, &job->work) != napi_ok) {
    failed = "rtnl: napi_create_async_work failed";
  } else if (napi_queue_async_work(env, job->work) != napi_ok) {
    failed = "rtnl: napi_queue_async_work failed";
    napi_delete_async_work(env, job->work);
  }
  if (failed == NULL) {
    socket->busy = 1;
    return promise;
  }
  // Not queued: the job and its hold on the socket's handle go now (held, the handle would never
  // be freed, nor its descriptor closed by the finalizer). A promise made is rejected (that is the
  // only way to release it); the caller gets it as it would any other.
  napi_deferred deferred = job->deferred;
  napi_delete_reference(env, job->handle);
  free_job(job);
  if (promise == NULL) {
    napi_throw_error(env, "EINTERNAL", failed);
    return NULL;
  }
  napi_value code, text, exception;
  napi_create_string_utf8(env, "EINTERNAL", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, failed, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &exception);
  napi_set_named_property(env, exception, "code", code);
  napi_reject_deferred(env, deferred, exception);
  return promise;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("open", socket_open),
      ADDON_FUNCTION("namespace", socket_namespace),
      ADDON_FUNCTION("run", socket_run),
      ADDON_FUNCTION("close", socket_close),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  // The program format this runner reads (its record kinds and flags): the JS side refuses an
  // addon built from other sources (a partial build) with one line, not EINVAL on every record.
  napi_value format;
  if (napi_create_uint32(env, PROGRAM_FORMAT, &format) == napi_ok) napi_set_named_property(env, exports, "programFormat", format);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
