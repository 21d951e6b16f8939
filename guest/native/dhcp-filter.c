// The socket filter of the DHCP server's link sockets (guest/dhcp/link-socket.ts).
//
// Why a filter: a raw IPPROTO_UDP socket gets a copy of every UDP datagram its link delivers to
// the provider, the clients' DNS queries to the gateway included (tens of thousands a second
// under load); each copy woke the event loop and was read, parsed and thrown away in JS. This
// classic BPF program keeps only datagrams to port 67, in the kernel.
//
// Why native: SO_ATTACH_FILTER takes a struct sock_fprog, which points at the program, and JS
// cannot make a pointer. raw-socket's setOption hands a Buffer's bytes to setsockopt(2) as they
// are, so this addon gives JS the struct, pointing at the program below (static: it lives as long
// as the process), with the option's level and number from the C headers. The kernel copies the
// program during setsockopt.
//
// JS API: dhcpServerFilter() -> { level, option, value: Buffer, dropAll: Buffer }
//   dropAll: the same option's value for a program that keeps nothing, for while the socket is
//   not yet bound to its link (see link-socket.ts).
// bindToIndexOption() -> { level, option }: SO_BINDTOIFINDEX (Linux 5.1), which binds a socket to
//   a device by index, as the agent knows its links; its number differs between architectures.
// holdUdpPort(address, port) -> fd: a UDP socket bound to address:port (IP_FREEBIND: the address
//   need not be on a link yet) whose filter keeps nothing, so that the port is bound (a unicast
//   datagram to it finds a socket, and the kernel answers no ICMP port-unreachable) yet nothing is
//   ever queued on it: each datagram to it is dropped in the kernel, counted in /proc/net/udp's
//   drops (and UdpInErrors), and wakes no one. Bound to the gateway's address, not 0.0.0.0: a
//   socket bound to an address gets no broadcasts, so those (most DHCP traffic, and every other
//   host's on an uplink's LAN) find no socket and count only as UdpIgnoredMulti, as with none; only
//   unicast requests to the gateway (renewals) are dropped here. The server's link sockets read
//   the requests; a socket of Node's dgram would read every datagram to the port a second time, a
//   flood's too, only to discard it. Node never polls the descriptor; close it with fs.closeSync.
//   Throws an Error whose code is the errno's name (EADDRINUSE, EACCES, ...).
// linkMtu(ifindex) -> number: the MTU of the device of that index now, in this process's network
//   namespace (SIOCGIFNAME, then SIOCGIFMTU, on a socket opened for the call: a raw socket's
//   descriptor is raw-socket's, and IP_MTU answers only a connected socket). The server caps a
//   reply at it: one larger than the link's MTU cannot go out (the server sends with DF set, and a
//   client reading a packet socket, as udhcpc does, reassembles no fragments). Throws an Error whose
//   code is the errno's name (ENODEV: no device of that index).
#define _GNU_SOURCE  // strerrorname_np, in the shared plumbing
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "dhcp-filter"
#include "../../shared/native/napi-plumbing.h"

#include <errno.h>
#include <linux/filter.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define DHCP_SERVER_PORT 67

// What a raw IPv4 socket's filter sees starts at the IP header, the datagram reassembled.
static struct sock_filter dhcp_server_program[] = {
    // X = the IP header's length (4 * IHL)
    BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),
    // A = the UDP destination port
    BPF_STMT(BPF_LD | BPF_H | BPF_IND, 2),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DHCP_SERVER_PORT, 0, 1),
    // Keep the whole datagram, or none of it.
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    BPF_STMT(BPF_RET | BPF_K, 0),
};

static struct sock_filter drop_all_program[] = {
    BPF_STMT(BPF_RET | BPF_K, 0),
};

// The struct sock_fprog for `program` as a Buffer, in result[name]; NULL on failure.
static napi_value set_program(napi_env env, napi_value result, const char *name, struct sock_filter *program, unsigned short length) {
  struct sock_fprog fprog = {.len = length, .filter = program};
  napi_value value;
  if (napi_create_buffer_copy(env, sizeof fprog, &fprog, NULL, &value) != napi_ok) return NULL;
  if (napi_set_named_property(env, result, name, value) != napi_ok) return NULL;
  return result;
}

static napi_value dhcp_server_filter(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (set_program(env, result, "value", dhcp_server_program, sizeof dhcp_server_program / sizeof dhcp_server_program[0]) == NULL) return NULL;
  if (set_program(env, result, "dropAll", drop_all_program, sizeof drop_all_program / sizeof drop_all_program[0]) == NULL) return NULL;
  if (set_number(env, result, "level", SOL_SOCKET) == NULL) return NULL;
  return set_number(env, result, "option", SO_ATTACH_FILTER);
}

static napi_value bind_to_index_option(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (set_number(env, result, "level", SOL_SOCKET) == NULL) return NULL;
  return set_number(env, result, "option", SO_BINDTOIFINDEX);
}

static napi_value hold_udp_port(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char text[64];  // longer than any IPv4 address: a longer string is refused
  struct in_addr host;
  if (!whole_string(env, argv[0], text, sizeof text) || inet_pton(AF_INET, text, &host) != 1) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": the address is not an IPv4 address");
    return NULL;
  }
  uint32_t port;
  if (napi_get_value_uint32(env, argv[1], &port) != napi_ok || port == 0 || port > 65535) {
    napi_throw_range_error(env, "EINVAL", ADDON_NAME ": the port is not 1..65535");
    return NULL;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  // The filter before the bind: from the moment the port is bound, nothing is queued.
  struct sock_fprog fprog = {.len = sizeof drop_all_program / sizeof drop_all_program[0], .filter = drop_all_program};
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = host};
  const int on = 1;
  const char *step = "setsockopt(SO_ATTACH_FILTER)";
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) == 0) {
    step = "setsockopt(IP_FREEBIND)";
    if (setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &on, sizeof on) == 0) {
      step = "bind";
      if (bind(fd, (struct sockaddr *)&address, sizeof address) == 0) {
        napi_value result;
        if (napi_create_int32(env, fd, &result) == napi_ok) return result;
        close(fd);
        return NULL;
      }
    }
  }
  int error = errno;
  close(fd);
  return throw_errno(env, error, step);
}

static napi_value link_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  uint32_t ifindex;
  if (napi_get_value_uint32(env, argv[0], &ifindex) != napi_ok || ifindex == 0 || ifindex > INT32_MAX) {
    napi_throw_range_error(env, "EINVAL", ADDON_NAME ": the interface index is not 1..2^31-1");
    return NULL;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  struct ifreq request = {.ifr_ifindex = (int)ifindex};
  const char *step = "ioctl(SIOCGIFNAME)";
  if (ioctl(fd, SIOCGIFNAME, &request) == 0) {
    step = "ioctl(SIOCGIFMTU)";
    if (ioctl(fd, SIOCGIFMTU, &request) == 0) {
      close(fd);
      napi_value result;
      if (napi_create_int32(env, request.ifr_mtu, &result) != napi_ok) return NULL;
      return result;
    }
  }
  int error = errno;
  close(fd);
  return throw_errno(env, error, step);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("dhcpServerFilter", dhcp_server_filter),
      ADDON_FUNCTION("bindToIndexOption", bind_to_index_option),
      ADDON_FUNCTION("holdUdpPort", hold_udp_port),
      ADDON_FUNCTION("linkMtu", link_mtu),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
