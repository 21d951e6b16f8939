// Deleting the conntrack entries of client addresses through libnetfilter_conntrack, the library
// conntrack-tools is built on, in the caller's own network namespace.
//
// Why: an entry outlives the client that made it (UDP 30-120 s, established TCP 5 days). Once its
// client IP serves another VM, replies to the old VM's masqueraded flows would be de-NATed to that
// IP and routed to the new VM; the agent deletes them first (as Qubes does with `conntrack -D`).
//
// How: the kernel cannot delete by address (a filtered flush takes a mark, a status or a zone,
// not a tuple), so, as `conntrack -D -s IP` does, one dump of the IPv4 table (the family is
// filtered in the kernel; the reaper's reap reads IPv6 too), the matching entries kept, then one
// delete each. One dump serves any number of addresses: each entry's four addresses (original and
// reply, source and destination) are looked up in sorted arrays. An entry deleted meanwhile by someone else (ENOENT) is no error.
//
// What is kept of a match until the dump ends is what its delete needs (held_entry, some 50
// bytes in one growing array), not the library's entry (a struct nf_conntrack, some 400 bytes
// allocated each): a reap of a full table of closed flows (nf_conntrack_max 262,144) would
// otherwise hold some 100 MB in a small provider VM.
//
// Why async work: a dump of a large table takes milliseconds to tens of them, and DHCP and DNS
// share the event loop. Each call opens its own ctnetlink socket on libuv's thread pool; calls
// share nothing.
//
// JS API:
//   purge(exact, sweepNetwork, sweepPrefix, keep, callback(error, phase, scanned, matched, deleted))
//       exact: Uint32Array, sorted, host byte order: every entry naming one of these goes.
//       sweepNetwork/sweepPrefix: with a prefix of 0 to 32, every entry naming an address of that
//       network that is not in `keep` (Uint32Array, sorted) goes too; -1: no sweep.
//       error: null, or the errno's name of the first failure, in `phase` ("open", "dump" or
//       "delete"); the counts say how far it got (what was matched before a failed dump is still
//       deleted, and counted, unless a receive timed out). scanned: entries seen (IPv4, but for
//       reap's any source: IPv4 and IPv6); matched; deleted (ENOENT not counted). EAGAIN: the
//       kernel did not answer one receive within RECEIVE_TIMEOUT_S; the call ends there.
//       Throws {code} for bad arguments or when it cannot queue.
//   reap(sources, tcpStates, callback(error, phase, scanned, matched, deleted))
//       Deletes the TCP entries whose state is in `tcpStates` (a bit mask: bit N for the kernel's
//       TCP_CONNTRACK_* value N, linux/netfilter/nf_conntrack_tcp.h) and whose original source is
//       one of `sources` (Uint32Array, host byte order; IPv4 entries only), or any source, IPv4 or
//       IPv6, when `sources` is null (the reaper's: closed flows, see guest/conntrack/closed-flows.ts,
//       whose reapMatches is this filter's reference). The same dump as purge (of both families for
//       any source: one dump, AF_UNSPEC), the same callback. Each delete names the entry's id as
//       dumped, so an entry that took the tuple meanwhile is mostly not deleted (ENOENT, not
//       counted): see destroy_held for when it is.
#define _GNU_SOURCE  // strerrorname_np, in the shared plumbing
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "conntrack-purge"
#include "../../shared/native/napi-plumbing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#if !__has_include(<libnetfilter_conntrack/libnetfilter_conntrack.h>)
#error "libnetfilter_conntrack.h is missing: install libnetfilter-conntrack-dev (scripts/setup does), then npm run build"
#endif
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <string.h>

// Longest wait for one answer of the kernel (a dump is many answers, each quick).
#define RECEIVE_TIMEOUT_S 10

// Which filter a call applies.
typedef enum { FILTER_ADDRESSES, FILTER_CLOSED_TCP } filter_kind;

// What the delete of a matched entry needs (the kernel finds an entry by its family, zone and
// original tuple, ctnetlink_del_conntrack), copied out of the dump.
typedef struct {
  // The original tuple's addresses, network order: an IPv4 address in the first word.
  uint32_t source[4];
  uint32_t destination[4];
  // CTA_ID as dumped, for a reap's delete (see destroy_held).
  uint32_t id;
  // Ports (TCP, UDP, SCTP, DCCP, UDP-Lite, GRE keys), network order; for ICMP, the id in `source_port`.
  uint16_t source_port;
  uint16_t destination_port;
  uint16_t zone;
  uint16_t original_zone;
  uint8_t family;
  uint8_t protocol;
  uint8_t icmp_type;
  uint8_t icmp_code;
  // HELD_* bits: which of the attributes above the entry had.
  uint8_t has;
} held_entry;

enum { HELD_PORTS = 1, HELD_ICMP = 2, HELD_ZONE = 4, HELD_ORIGINAL_ZONE = 8, HELD_ID = 16 };

typedef struct {
  napi_async_work work;
  filter_kind kind;
  napi_ref callback;
  uint32_t *exact;
  size_t exact_count;
  uint32_t *keep;
  size_t keep_count;
  int sweep;
  uint32_t sweep_network;
  uint32_t sweep_mask;
  // FILTER_CLOSED_TCP: original sources (sorted; any_source: all), and the TCP states as a bit mask.
  int any_source;
  uint32_t *sources;
  size_t source_count;
  uint32_t tcp_states;
  // Filled on the worker thread.
  int error;
  const char *phase;
  uint32_t scanned;
  held_entry *held;
  size_t held_count;
  size_t held_capacity;
  uint32_t deleted;
} purge_call;

static int compare_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int contains(const uint32_t *sorted, size_t count, uint32_t address) {
  return count > 0 && bsearch(&address, sorted, count, sizeof *sorted, compare_u32) != NULL;
}

// Whether an entry naming `address` must go (host byte order).
static int wanted(const purge_call *call, uint32_t address) {
  if (contains(call->exact, call->exact_count, address)) return 1;
  return call->sweep && (address & call->sweep_mask) == call->sweep_network && !contains(call->keep, call->keep_count, address);
}

// FILTER_ADDRESSES: whether one of the entry's four addresses must go.
static int names_wanted_address(const purge_call *call, const struct nf_conntrack *ct) {
  const enum nf_conntrack_attr addresses[] = {ATTR_IPV4_SRC, ATTR_IPV4_DST, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV4_DST};
  for (size_t index = 0; index < sizeof addresses / sizeof addresses[0]; index++) {
    if (nfct_attr_is_set(ct, addresses[index]) > 0 && wanted(call, ntohl(nfct_get_attr_u32(ct, addresses[index])))) return 1;
  }
  return 0;
}

// FILTER_CLOSED_TCP: a TCP entry in one of the states, opened by one of the sources (or any).
static int is_closed_tcp_of_source(const purge_call *call, const struct nf_conntrack *ct) {
  if (nfct_attr_is_set(ct, ATTR_L4PROTO) <= 0 || nfct_get_attr_u8(ct, ATTR_L4PROTO) != IPPROTO_TCP) return 0;
  if (nfct_attr_is_set(ct, ATTR_TCP_STATE) <= 0) return 0;
  uint8_t state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
  if (state >= 32 || (call->tcp_states & ((uint32_t)1 << state)) == 0) return 0;
  if (call->any_source) return 1;
  // Sources are IPv4: an IPv6 entry (only dumped for any source) has no ATTR_IPV4_SRC anyway.
  return nfct_get_attr_u8(ct, ATTR_L3PROTO) == AF_INET && nfct_attr_is_set(ct, ATTR_IPV4_SRC) > 0 && contains(call->sources, call->source_count, ntohl(nfct_get_attr_u32(ct, ATTR_IPV4_SRC)));
}

// Whether the call reads the IPv6 table too: the reaper's any-source reap (the provider's own
// flows to an IPv6 upstream resolver fill the table as much as IPv4 ones). Addresses and sources
// are IPv4.
static int dumps_ipv6(const purge_call *call) {
  return call->kind == FILTER_CLOSED_TCP && call->any_source;
}

// What destroy_held needs of `ct` (an IPv4 or IPv6 entry).
static held_entry held_from(const struct nf_conntrack *ct) {
  held_entry entry = {.family = nfct_get_attr_u8(ct, ATTR_L3PROTO), .protocol = nfct_get_attr_u8(ct, ATTR_L4PROTO)};
  if (entry.family == AF_INET) {
    entry.source[0] = nfct_get_attr_u32(ct, ATTR_IPV4_SRC);
    entry.destination[0] = nfct_get_attr_u32(ct, ATTR_IPV4_DST);
  } else {
    memcpy(entry.source, nfct_get_attr(ct, ATTR_IPV6_SRC), sizeof entry.source);
    memcpy(entry.destination, nfct_get_attr(ct, ATTR_IPV6_DST), sizeof entry.destination);
  }
  if (nfct_attr_is_set(ct, ATTR_ICMP_TYPE) > 0) {
    entry.has |= HELD_ICMP;
    entry.icmp_type = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE);
    entry.icmp_code = nfct_get_attr_u8(ct, ATTR_ICMP_CODE);
    entry.source_port = nfct_get_attr_u16(ct, ATTR_ICMP_ID);
  } else if (nfct_attr_is_set(ct, ATTR_PORT_SRC) > 0) {
    entry.has |= HELD_PORTS;
    entry.source_port = nfct_get_attr_u16(ct, ATTR_PORT_SRC);
    entry.destination_port = nfct_get_attr_u16(ct, ATTR_PORT_DST);
  }
  if (nfct_attr_is_set(ct, ATTR_ZONE) > 0) {
    entry.has |= HELD_ZONE;
    entry.zone = nfct_get_attr_u16(ct, ATTR_ZONE);
  }
  if (nfct_attr_is_set(ct, ATTR_ORIG_ZONE) > 0) {
    entry.has |= HELD_ORIGINAL_ZONE;
    entry.original_zone = nfct_get_attr_u16(ct, ATTR_ORIG_ZONE);
  }
  if (nfct_attr_is_set(ct, ATTR_ID) > 0) {
    entry.has |= HELD_ID;
    entry.id = nfct_get_attr_u32(ct, ATTR_ID);
  }
  return entry;
}

static int on_entry(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *data) {
  (void)type;
  purge_call *call = data;
  uint8_t family = nfct_get_attr_u8(ct, ATTR_L3PROTO);
  if (family != AF_INET && !(family == AF_INET6 && dumps_ipv6(call))) return NFCT_CB_CONTINUE;
  call->scanned += 1;
  int match = call->kind == FILTER_CLOSED_TCP ? is_closed_tcp_of_source(call, ct) : names_wanted_address(call, ct);
  if (!match) return NFCT_CB_CONTINUE;
  if (call->held_count == call->held_capacity) {
    size_t capacity = call->held_capacity == 0 ? 64 : call->held_capacity * 2;
    held_entry *grown = realloc(call->held, capacity * sizeof *grown);
    if (grown == NULL) {
      call->error = ENOMEM;
      call->phase = "dump";
      return NFCT_CB_FAILURE;
    }
    call->held = grown;
    call->held_capacity = capacity;
  }
  // The library frees `ct` once this returns.
  call->held[call->held_count++] = held_from(ct);
  return NFCT_CB_CONTINUE;
}

// A new entry of `held`'s family, original tuple and zones: what a delete request is built from.
// NULL (errno set) when out of memory.
static struct nf_conntrack *entry_to_delete(const held_entry *held) {
  struct nf_conntrack *ct = nfct_new();
  if (ct == NULL) return NULL;
  nfct_set_attr_u8(ct, ATTR_L3PROTO, held->family);
  nfct_set_attr_u8(ct, ATTR_L4PROTO, held->protocol);
  if (held->family == AF_INET) {
    nfct_set_attr_u32(ct, ATTR_IPV4_SRC, held->source[0]);
    nfct_set_attr_u32(ct, ATTR_IPV4_DST, held->destination[0]);
  } else {
    nfct_set_attr(ct, ATTR_IPV6_SRC, held->source);
    nfct_set_attr(ct, ATTR_IPV6_DST, held->destination);
  }
  if (held->has & HELD_PORTS) {
    nfct_set_attr_u16(ct, ATTR_PORT_SRC, held->source_port);
    nfct_set_attr_u16(ct, ATTR_PORT_DST, held->destination_port);
  }
  if (held->has & HELD_ICMP) {
    nfct_set_attr_u8(ct, ATTR_ICMP_TYPE, held->icmp_type);
    nfct_set_attr_u8(ct, ATTR_ICMP_CODE, held->icmp_code);
    nfct_set_attr_u16(ct, ATTR_ICMP_ID, held->source_port);
    // The library's ICMP attributes are both directions' (it writes the reply tuple's too) and
    // make nfct_nlmsg_build add a reply tuple, which needs a family and addresses: the original's
    // inverse. (Without, 1.0.9 leaves the reply tuple out; a library that failed the whole build
    // instead would refuse every ICMP delete.) The kernel finds the entry by the original tuple.
    nfct_setobjopt(ct, NFCT_SOPT_SETUP_REPLY);
  }
  if (held->has & HELD_ZONE) nfct_set_attr_u16(ct, ATTR_ZONE, held->zone);
  if (held->has & HELD_ORIGINAL_ZONE) nfct_set_attr_u16(ct, ATTR_ORIG_ZONE, held->original_zone);
  return ct;
}

// Room for one delete request or its answer: a tuple or two and an id, and the kernel's error
// answer quotes the request.
#define MESSAGE_BYTES 8192

// Delete the entry `held` names: by its tuple alone (a purge's: whatever entry has the tuple now
// goes), or (with_id, a reap's) only if the table still holds the entry the dump saw: the request
// then carries its id (CTA_ID), which the kernel compares (ENOENT when another entry took the
// tuple meanwhile). Not a guarantee: the id is a hash of the entry's address, master, netns and
// original tuple (nf_ct_get_id), and a SYN reopening a closed flow frees the old entry and
// allocates the new one at once, most often in the same slab slot: same tuple, same id, deleted
// (seen on 6.18 in 3 of 5 reopens). The window is from the dump to this delete.
// nfct_query(NFCT_Q_DESTROY) sends no id (checked with libnetfilter_conntrack 1.0.9), so the
// request is built here for both (nfct_nlmsg_build of entry_to_delete, then CTA_ID) and sent on
// the handle's socket, idle between requests. 0, or -1 with errno.
static int destroy_held(struct nfct_handle *handle, const held_entry *held, int with_id, uint32_t seq) {
  static _Thread_local union {
    char bytes[MESSAGE_BYTES];
    struct nlmsghdr header;
  } request, answer;
  if (with_id && !(held->has & HELD_ID)) {
    errno = EINVAL;
    return -1;
  }
  memset(&request, 0, NLMSG_LENGTH(sizeof(struct nfgenmsg)));
  struct nlmsghdr *message = &request.header;
  message->nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg));
  message->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
  message->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  message->nlmsg_seq = seq;
  struct nfgenmsg *family = NLMSG_DATA(message);
  // The entry's own (AF_INET or AF_INET6): nfct_nlmsg_build puts its tuple in that family's attributes.
  family->nfgen_family = held->family;
  family->version = NFNETLINK_V0;
  struct nf_conntrack *ct = entry_to_delete(held);
  if (ct == NULL) return -1;
  int built = nfct_nlmsg_build(message, ct);
  nfct_destroy(ct);
  if (built < 0) return -1;
  // A delete without a tuple is a flush to the kernel (of every entry): never send one. The
  // library puts the original tuple first.
  const struct nlattr *first = (const struct nlattr *)(request.bytes + NLMSG_LENGTH(sizeof(struct nfgenmsg)));
  if (message->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg)) + NLA_HDRLEN || (first->nla_type & NLA_TYPE_MASK) != CTA_TUPLE_ORIG ||
      NLMSG_ALIGN(message->nlmsg_len) + NLA_HDRLEN + sizeof(uint32_t) > MESSAGE_BYTES) {
    errno = EINVAL;
    return -1;
  }
  if (with_id) {
    struct nlattr *id = (struct nlattr *)(request.bytes + NLMSG_ALIGN(message->nlmsg_len));
    id->nla_type = CTA_ID;
    id->nla_len = NLA_HDRLEN + sizeof(uint32_t);
    uint32_t value = htonl(held->id);
    memcpy((char *)id + NLA_HDRLEN, &value, sizeof value);
    message->nlmsg_len = NLMSG_ALIGN(message->nlmsg_len) + id->nla_len;
  }
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  int fd = nfct_fd(handle);
  if (sendto(fd, message, message->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -1;
  for (;;) {
    ssize_t length = recv(fd, answer.bytes, sizeof answer.bytes, 0);
    if (length < 0) return -1;
    for (struct nlmsghdr *reply = &answer.header; NLMSG_OK(reply, length); reply = NLMSG_NEXT(reply, length)) {
      if (reply->nlmsg_seq != seq || reply->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *outcome = NLMSG_DATA(reply);
      if (outcome->error == 0) return 0;
      errno = -outcome->error;
      return -1;
    }
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  purge_call *call = data;
  struct nfct_handle *handle = nfct_open(CONNTRACK, 0);
  if (handle == NULL) {
    call->error = errno;
    call->phase = "open";
    return;
  }
  // A receive the kernel never answers ends (EAGAIN) rather than hold a libuv thread for good,
  // which the firewall's nft work shares; the adapter starts no purge while one runs.
  struct timeval bound = {.tv_sec = RECEIVE_TIMEOUT_S, .tv_usec = 0};
  setsockopt(nfct_fd(handle), SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound);
  nfct_callback_register(handle, NFCT_T_ALL, on_entry, call);
  // AF_UNSPEC: the kernel dumps every family (ctnetlink filters only by a nonzero one).
  uint32_t family = dumps_ipv6(call) ? AF_UNSPEC : AF_INET;
  if (nfct_query(handle, NFCT_Q_DUMP, &family) < 0 && call->error == 0) {
    call->error = errno != 0 ? errno : EIO;
    call->phase = "dump";
  }
  nfct_callback_unregister(handle);
  // Entries the dump matched go even when it failed part way: the caller retries the rest. But
  // not after a receive timed out (EAGAIN, the dump's or a delete's): each further delete would
  // wait as long, so a stuck socket would hold the call (and a pool thread) for 10 s per entry
  // matched; it ends at once instead, and the caller retries.
  int timed_out = call->error == EAGAIN || call->error == EWOULDBLOCK;
  for (size_t index = 0; index < call->held_count && !timed_out; index++) {
    if (destroy_held(handle, &call->held[index], call->kind == FILTER_CLOSED_TCP, (uint32_t)index + 1) == 0) {
      call->deleted += 1;
      continue;
    }
    int failed = errno;
    if (failed == ENOENT) continue;
    timed_out = failed == EAGAIN || failed == EWOULDBLOCK;
    if (call->error == 0) {
      call->error = failed;
      call->phase = "delete";
    }
  }
  nfct_close(handle);
}

static void free_call(napi_env env, purge_call *call) {
  if (call->callback != NULL) napi_delete_reference(env, call->callback);
  if (call->work != NULL) napi_delete_async_work(env, call->work);
  free(call->held);
  free(call->exact);
  free(call->keep);
  free(call->sources);
  free(call);
}

static void complete(napi_env env, napi_status status, void *data) {
  purge_call *call = data;
  napi_value argv[5];
  napi_value callback, global;
  if (status != napi_ok && call->error == 0) {
    call->error = ECANCELED;
    call->phase = "dump";
  }
  if (call->error == 0) {
    napi_get_null(env, &argv[0]);
    napi_get_null(env, &argv[1]);
  } else {
    const char *name = strerrorname_np(call->error);
    char fallback[16];
    snprintf(fallback, sizeof fallback, "E%d", call->error);
    napi_create_string_utf8(env, name != NULL ? name : fallback, NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_string_utf8(env, call->phase, NAPI_AUTO_LENGTH, &argv[1]);
  }
  napi_create_uint32(env, call->scanned, &argv[2]);
  napi_create_uint32(env, (uint32_t)call->held_count, &argv[3]);
  napi_create_uint32(env, call->deleted, &argv[4]);
  if (napi_get_reference_value(env, call->callback, &callback) == napi_ok && napi_get_global(env, &global) == napi_ok) {
    napi_call_function(env, global, callback, 5, argv, NULL);
  }
  free_call(env, call);
}

// A copy of a Uint32Array argument, sorted; 0 (with an exception pending) when it is none.
static int copy_addresses(napi_env env, napi_value value, const char *what, uint32_t **out, size_t *count) {
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint32_array) {
    char message[96];
    snprintf(message, sizeof message, ADDON_NAME ": %s must be a Uint32Array", what);
    napi_throw_type_error(env, "EINVAL", message);
    return 0;
  }
  *count = length;
  *out = malloc(length == 0 ? 1 : length * sizeof **out);
  if (*out == NULL) {
    throw_errno(env, ENOMEM, ADDON_NAME ": purge");
    return 0;
  }
  if (length > 0) memcpy(*out, data, length * sizeof **out);
  qsort(*out, length, sizeof **out, compare_u32);
  return 1;
}

// Queue `call` on libuv's thread pool; frees it and throws when it cannot.
static napi_value queue_call(napi_env env, purge_call *call, napi_value callback) {
  napi_value name;
  if (napi_create_reference(env, callback, 1, &call->callback) != napi_ok ||
      napi_create_string_utf8(env, ADDON_NAME, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, call, &call->work) != napi_ok ||
      napi_queue_async_work(env, call->work) != napi_ok) {
    free_call(env, call);
    return throw_errno(env, EIO, ADDON_NAME ": cannot queue the call");
  }
  return NULL;
}

// A new call of `kind` once its callback is checked to be a function; NULL (an exception pending)
// otherwise, or when out of memory.
static purge_call *new_call(napi_env env, napi_value callback, filter_kind kind) {
  napi_valuetype type;
  if (napi_typeof(env, callback, &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the callback must be a function");
    return NULL;
  }
  purge_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    throw_errno(env, ENOMEM, kind == FILTER_CLOSED_TCP ? ADDON_NAME ": reap" : ADDON_NAME ": purge");
    return NULL;
  }
  call->kind = kind;
  return call;
}

static napi_value purge(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  uint32_t network = 0;
  int32_t prefix = 0;
  if (napi_get_value_uint32(env, argv[1], &network) != napi_ok || napi_get_value_int32(env, argv[2], &prefix) != napi_ok || prefix < -1 || prefix > 32) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the sweep is a network (uint32) and a prefix length from 0 to 32, or -1 for none");
    return NULL;
  }
  purge_call *call = new_call(env, argv[4], FILTER_ADDRESSES);
  if (call == NULL) return NULL;
  if (!copy_addresses(env, argv[0], "the exact addresses", &call->exact, &call->exact_count) ||
      !copy_addresses(env, argv[3], "the addresses to keep", &call->keep, &call->keep_count)) {
    free_call(env, call);
    return NULL;
  }
  call->sweep = prefix >= 0;
  call->sweep_mask = prefix <= 0 ? 0 : ~(uint32_t)0 << (32 - prefix);
  call->sweep_network = network & call->sweep_mask;
  return queue_call(env, call, argv[4]);
}

static napi_value reap(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  uint32_t states = 0;
  napi_valuetype type;
  // Bits past TCP_CONNTRACK_MAX name no state an entry can be in: a caller's mistake.
  if (napi_get_value_uint32(env, argv[1], &states) != napi_ok || states >= ((uint32_t)1 << TCP_CONNTRACK_MAX)) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the TCP states are a bit mask of TCP_CONNTRACK_* values below TCP_CONNTRACK_MAX");
    return NULL;
  }
  purge_call *call = new_call(env, argv[2], FILTER_CLOSED_TCP);
  if (call == NULL) return NULL;
  // null: any source (not an empty array, which would match none).
  if (napi_typeof(env, argv[0], &type) != napi_ok) {
    free_call(env, call);
    return throw_errno(env, EIO, ADDON_NAME ": reap");
  }
  call->any_source = type == napi_null;
  if (!call->any_source && !copy_addresses(env, argv[0], "the sources (or null for any)", &call->sources, &call->source_count)) {
    free_call(env, call);
    return NULL;
  }
  call->tcp_states = states;
  return queue_call(env, call, argv[2]);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("purge", purge),
      ADDON_FUNCTION("reap", reap),
  };
  if (EXPORT_FUNCTIONS(env, exports, functions) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
