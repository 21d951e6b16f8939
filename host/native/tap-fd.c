// Tap file descriptors handed to a VMM over its API socket (SCM_RIGHTS), as Spectrum's host
// does for cloud-hypervisor: the VMM gets an open queue of the tap and needs neither
// CAP_NET_ADMIN nor /dev/net/tun.
//
// Why native: Node cannot send or receive descriptors on a Unix stream socket (only over its own
// IPC channel), nor issue the tun ioctls.
//
// JS API (host/vmm/tap-fd.ts wraps it); errors are thrown with `code` set to the errno's name:
//   openTap(name, netnsPath | null) -> fd   a queue of the existing persistent tap `name`
//       (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking) in that network namespace (null: the
//       caller's). ENODEV if there is no such tap (none is ever made here, and no module is
//       loaded for its name: it is looked up as deviceMtu looks, below), EBUSY if another
//       process holds its queue, EINVAL if the device is no tap. The tap gets the virtio-net
//       header flag if it lacked it (the kernel takes it from whoever attaches). Only a device
//       whose own name is `name`: where `name` is another device's altname (which the kernel's
//       lookups, TUNSETIFF's too, resolve), that device is not attached, and the error's code is
//       ERR_TAP_ALTNAME, its `device` that device's own name.
//   connectUnix(path) -> fd                  a connected, non-blocking Unix stream socket
//   sendWithRights(fd, bytes, fds) -> sent   one sendmsg of bytes with fds attached (SCM_RIGHTS)
//   peekRights(fd, max) -> fds | null        the descriptors attached to the first unread bytes,
//       without reading them (copies, close-on-exec); null if nothing has arrived yet
//   tapName(fd) -> string                    the name of the tap an fd is a queue of (TUNGETIFF)
//   peerPid(fd) -> pid                       the pid SO_PEERCRED gives for a connected Unix socket:
//       on a client's socket, the process that made the listening socket listen, as seen from our
//       PID namespace; 0 if it is not visible there
//   peerPidfd(fd) -> pidfd                   a pidfd (close-on-exec) for that same process
//       (SO_PEERPIDFD, Linux 6.5): ENOPROTOOPT before 6.5; EINVAL (later kernels: ESRCH) where it
//       has been reaped, or newer kernels a pidfd of the exited process; ENODATA if the socket
//       has no peer pid
//   pidfdExited(pidfd) -> boolean            whether the pidfd's process has exited (readable
//       to poll: it is a zombie or gone). While it has not, its pid is its own: a pid names
//       another process only once the one it named has exited and been reaped
//   pidfdNetns(pidfd) -> fd                  the network namespace of a pidfd's process, open
//       (PIDFD_GET_NET_NAMESPACE, Linux 6.11; close-on-exec): no /proc read, so no pid to be
//       reused. ENOTTY before 6.11, ESRCH once the process has exited, EACCES without ptrace
//       access to it
//   deviceMtu(netnsFd, name) -> mtu          the MTU of the device `name` resolves to in that
//       network namespace (a device's name or an altname, as a VMM's SIOCGIFMTU there resolves
//       it), asked with RTM_GETLINK by IFLA_IFNAME on a route netlink socket made there: the
//       kernel only looks the name up (rtnl_getlink, __dev_get_by_name, which knows altnames).
//       Not SIOCGIFMTU: for a name nothing has, its dev_ioctl first calls dev_load, which runs
//       modprobe for "netdev-NAME" (CAP_NET_ADMIN) and "NAME" (CAP_SYS_MODULE): a read must not
//       load modules. Nothing is changed. ENODEV if no device has that name there
// Descriptors are closed from JS (fs.closeSync).
#define _GNU_SOURCE  // setns, struct ucred
#define NAPI_VERSION 8
#include <node_api.h>
#define ADDON_NAME "tap-fd"
#include "../../shared/native/napi-plumbing.h"
#include "../../shared/native/getlink-request.h"
#include "../../shared/native/netns-switch.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "so-peerpidfd.h"  // after <sys/socket.h>: only where its headers lack SO_PEERPIDFD

#ifndef PIDFD_GET_NET_NAMESPACE
#define PIDFD_GET_NET_NAMESPACE _IO(0xFF, 4)  // Linux 6.11, include/uapi/linux/pidfd.h
#endif

#define MAX_RIGHTS 16
#define TAP_FLAGS (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)

static int int_arg(napi_env env, napi_value value, int32_t *out) {
  if (napi_get_value_int32(env, value, out) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": expected an integer");
    return 0;
  }
  return 1;
}

// A string argument into buffer (NUL-terminated); 0 with a TypeError if it does not fit.
static int string_arg(napi_env env, napi_value value, char *buffer, size_t size, const char *what) {
  if (!whole_string(env, value, buffer, size)) {
    char message[128];
    snprintf(message, sizeof message, ADDON_NAME ": %s must be a string of at most %zu bytes, without NUL", what, size - 1);
    napi_throw_type_error(env, "EINVAL", message);
    return 0;
  }
  return 1;
}

static napi_value number(napi_env env, int32_t value) {
  napi_value result;
  napi_create_int32(env, value, &result);
  return result;
}

static int link_lookup(int netlink, const char *name, uint32_t *mtu, char *own_name);

// A route netlink socket of this thread's network namespace whose answers come within a bound
// (the kernel answers while a request is sent; the bound only keeps a lost answer from hanging),
// or -1 with *error set.
static int route_socket(int *error) {
  int netlink = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  struct timeval bound = {.tv_sec = 2};
  if (netlink < 0 || setsockopt(netlink, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound) != 0) {
    *error = errno;
    if (netlink >= 0) close(netlink);
    return -1;
  }
  return netlink;
}

// A queue of the tap `name` in the current namespace, or -errno. Where `name` is an altname of
// another device, -ENODEV with that device's own name in `owner` (else owner is left empty).
static int attach_tap(const char *name, char owner[IFNAMSIZ]) {
  owner[0] = '\0';
  // TUNSETIFF makes a tap that does not exist: refuse first, and again if one appeared meanwhile.
  // Asked by RTM_GETLINK, not if_nametoindex: the tap may be missing (deleted, or never made in
  // that namespace), and for a missing name SIOCGIFINDEX first runs modprobe (dev_load).
  int error = 0;
  int netlink = route_socket(&error);
  if (netlink < 0) return -error;
  uint32_t mtu;
  char found[IFNAMSIZ];
  error = link_lookup(netlink, name, &mtu, found);
  close(netlink);
  if (error != 0) return -error;
  // TUNSETIFF looks its name up as the kernel does every name (__dev_get_by_name), altnames too:
  // another device's altname would attach that device (and give it the header flag).
  if (strcmp(found, name) != 0) {
    memcpy(owner, found, IFNAMSIZ);
    return -ENODEV;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return -errno;
  struct ifreq request;
  memset(&request, 0, sizeof request);
  strncpy(request.ifr_name, name, IFNAMSIZ - 1);
  request.ifr_flags = TAP_FLAGS;
  if (ioctl(fd, TUNSETIFF, &request) != 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  memset(&request, 0, sizeof request);
  if (ioctl(fd, TUNGETIFF, &request) != 0 || !(request.ifr_flags & IFF_PERSIST)) {
    close(fd);  // made just now by TUNSETIFF: closing removes it again
    return -ENODEV;
  }
  // Renamed, or the name moved to another device's altnames, since the lookup: not ours either.
  if (strncmp(request.ifr_name, name, IFNAMSIZ) != 0) {
    memcpy(owner, request.ifr_name, IFNAMSIZ - 1);
    owner[IFNAMSIZ - 1] = '\0';
    close(fd);
    return -ENODEV;
  }
  return fd;
}

// The error of a name that is another device's altname: code ERR_TAP_ALTNAME, `device` its own name.
static napi_value throw_altname(napi_env env, const char *name, const char *owner) {
  char message[160];
  snprintf(message, sizeof message, "%s is an altname of device %s, not a device's own name", name, owner);
  napi_value code, text, device, exception;
  napi_create_string_utf8(env, "ERR_TAP_ALTNAME", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
  napi_create_string_utf8(env, owner, NAPI_AUTO_LENGTH, &device);
  napi_create_error(env, code, text, &exception);
  napi_set_named_property(env, exception, "code", code);
  napi_set_named_property(env, exception, "device", device);
  napi_throw(env, exception);
  return NULL;
}

static napi_value open_tap(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  // IFNAMSIZ with its terminator: a longer name is refused saying the 15 bytes a name may have.
  char name[IFNAMSIZ];
  if (!string_arg(env, argv[0], name, sizeof name, "tap name")) return NULL;
  if (name[0] == '\0') return throw_errno(env, EINVAL, name);
  napi_valuetype type;
  if (napi_typeof(env, argv[1], &type) != napi_ok) return NULL;
  int fd;
  char owner[IFNAMSIZ];
  if (type == napi_null || type == napi_undefined) {
    fd = attach_tap(name, owner);
  } else {
    char path[4096];
    if (!string_arg(env, argv[1], path, sizeof path, "namespace path")) return NULL;
    int netns_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) return throw_errno(env, errno, path);
    int home;
    int error = netns_enter(netns_fd, &home);
    close(netns_fd);
    if (error != 0) return throw_errno(env, error, path);
    fd = attach_tap(name, owner);
    netns_leave(home);
  }
  if (fd < 0 && owner[0] != '\0') return throw_altname(env, name, owner);
  if (fd < 0) return throw_errno(env, -fd, name);
  return number(env, fd);
}

static napi_value connect_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (!string_arg(env, argv[0], address.sun_path, sizeof address.sun_path, "socket path")) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    int error = errno;
    close(fd);
    return throw_errno(env, error, address.sun_path);
  }
  return number(env, fd);
}

static napi_value send_with_rights(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t fd;
  if (!int_arg(env, argv[0], &fd)) return NULL;
  void *data = NULL;
  size_t length = 0;
  napi_typedarray_type kind;
  if (napi_get_typedarray_info(env, argv[1], &kind, &length, &data, NULL, NULL) != napi_ok || kind != napi_uint8_array || length == 0) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": bytes must be a non-empty Uint8Array");
    return NULL;
  }
  uint32_t count = 0;
  if (napi_get_array_length(env, argv[2], &count) != napi_ok || count == 0 || count > MAX_RIGHTS) {
    napi_throw_type_error(env, "EINVAL", ADDON_NAME ": fds must be an array of 1 to 16 descriptors");
    return NULL;
  }
  int fds[MAX_RIGHTS];
  for (uint32_t index = 0; index < count; index++) {
    napi_value element;
    if (napi_get_element(env, argv[2], index, &element) != napi_ok || !int_arg(env, element, &fds[index])) return NULL;
  }
  union {
    char buffer[CMSG_SPACE(sizeof(int) * MAX_RIGHTS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec part = {.iov_base = data, .iov_len = length};
  struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = CMSG_SPACE(sizeof(int) * count)};
  struct cmsghdr *header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * count);
  memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
  ssize_t sent = sendmsg(fd, &message, MSG_NOSIGNAL);
  if (sent < 0) return throw_errno(env, errno, "sendmsg");
  return number(env, (int32_t)sent);
}

static napi_value peek_rights(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t fd, max;
  if (!int_arg(env, argv[0], &fd) || !int_arg(env, argv[1], &max)) return NULL;
  if (max < 1 || max > MAX_RIGHTS) max = MAX_RIGHTS;
  char byte;
  union {
    char buffer[CMSG_SPACE(sizeof(int) * MAX_RIGHTS)];
    struct cmsghdr align;
  } control;
  struct iovec part = {.iov_base = &byte, .iov_len = 1};
  struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = CMSG_SPACE(sizeof(int) * max)};
  ssize_t got = recvmsg(fd, &message, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  napi_value result;
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_get_null(env, &result);
      return result;
    }
    return throw_errno(env, errno, "recvmsg");
  }
  napi_create_array(env, &result);
  uint32_t count = 0;
  for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t received = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t index = 0; index < received; index++) {
      int passed;
      memcpy(&passed, CMSG_DATA(header) + index * sizeof(int), sizeof passed);
      napi_set_element(env, result, count++, number(env, passed));
    }
  }
  return result;
}

static napi_value tap_name(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (!int_arg(env, argv[0], &fd)) return NULL;
  struct ifreq request;
  memset(&request, 0, sizeof request);
  if (ioctl(fd, TUNGETIFF, &request) != 0) return throw_errno(env, errno, "TUNGETIFF");
  napi_value result;
  napi_create_string_utf8(env, request.ifr_name, strnlen(request.ifr_name, IFNAMSIZ), &result);
  return result;
}

static napi_value peer_pid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (!int_arg(env, argv[0], &fd)) return NULL;
  struct ucred peer;
  socklen_t size = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return throw_errno(env, errno, "SO_PEERCRED");
  return number(env, (int32_t)peer.pid);
}

static napi_value peer_pidfd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (!int_arg(env, argv[0], &fd)) return NULL;
#ifdef SO_PEERPIDFD
  int pidfd = -1;
  socklen_t size = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &size) != 0) return throw_errno(env, errno, "SO_PEERPIDFD");
  return number(env, pidfd);
#else
  // Its number on this architecture is not known here (so-peerpidfd.h): as a kernel without it.
  return throw_errno(env, ENOPROTOOPT, "SO_PEERPIDFD (its number on this architecture is unknown to this build)");
#endif
}

static napi_value pidfd_exited(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t pidfd;
  if (!int_arg(env, argv[0], &pidfd)) return NULL;
  struct pollfd watched = {.fd = pidfd, .events = POLLIN};
  int ready;
  do ready = poll(&watched, 1, 0);
  while (ready < 0 && errno == EINTR);
  if (ready < 0) return throw_errno(env, errno, "poll pidfd");
  if (watched.revents & POLLNVAL) return throw_errno(env, EBADF, "poll pidfd");
  napi_value result;
  napi_get_boolean(env, (watched.revents & (POLLIN | POLLHUP)) != 0, &result);
  return result;
}

static napi_value pidfd_netns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t pidfd;
  if (!int_arg(env, argv[0], &pidfd)) return NULL;
  int netns_fd = ioctl(pidfd, PIDFD_GET_NET_NAMESPACE, 0);
  if (netns_fd < 0) return throw_errno(env, errno, "PIDFD_GET_NET_NAMESPACE");
  return number(env, netns_fd);
}

// The MTU and own name (IFNAMSIZ bytes, NUL-terminated) of the device `name` resolves to (its
// own name or an altname) in the namespace of `netlink` (a route netlink socket), into *mtu and
// own_name: 0, or an errno (ENODEV: no device has that name).
static int link_lookup(int netlink, const char *name, uint32_t *mtu, char *own_name) {
  own_name[0] = '\0';
  getlink_request request;
  getlink_request_by_name(&request, name);
  struct nlmsghdr *header = &request.header;
  header->nlmsg_flags = NLM_F_REQUEST;
  header->nlmsg_seq = 1;

  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do sent = sendto(netlink, request.bytes, header->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;
  uint8_t *reply = NULL;
  int error = EPROTO;  // until an answer to this request says otherwise
  for (int answered = 0; !answered;) {
    // Each datagram is read whole, at its own size: statistics left out, a device's answer is a
    // few KiB, but its altnames alone may take 64 KiB (the kernel's bound on its property list).
    ssize_t size = recv(netlink, NULL, 0, MSG_PEEK | MSG_TRUNC);
    if (size < 0) {
      if (errno == EINTR) continue;
      error = errno;  // EAGAIN: no answer within the socket's receive timeout
      break;
    }
    free(reply);
    reply = malloc(size > 0 ? (size_t)size : 1);
    if (reply == NULL) {
      error = ENOMEM;
      break;
    }
    ssize_t received;
    do received = recv(netlink, reply, (size_t)size, MSG_TRUNC);
    while (received < 0 && errno == EINTR);
    if (received < 0) {
      error = errno;
      break;
    }
    if (received > size) {
      error = EMSGSIZE;
      break;
    }
    int left = (int)received;  // signed: an unpadded last message takes it below 0, which NLMSG_OK ends on
    for (struct nlmsghdr *message = (struct nlmsghdr *)reply; NLMSG_OK(message, left); message = NLMSG_NEXT(message, left)) {
      if (message->nlmsg_seq != header->nlmsg_seq) continue;
      answered = 1;
      if (message->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *refusal = NLMSG_DATA(message);
        if (message->nlmsg_len >= NLMSG_LENGTH(sizeof *refusal) && refusal->error < 0) error = -refusal->error;
        break;
      }
      if (message->nlmsg_type != RTM_NEWLINK || message->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) break;
      int length = (int)(message->nlmsg_len - NLMSG_LENGTH(sizeof(struct ifinfomsg)));
      int has_mtu = 0;
      for (struct rtattr *found = IFLA_RTA(NLMSG_DATA(message)); RTA_OK(found, length); found = RTA_NEXT(found, length)) {
        if (found->rta_type == IFLA_MTU && RTA_PAYLOAD(found) >= sizeof *mtu) {
          memcpy(mtu, RTA_DATA(found), sizeof *mtu);
          has_mtu = 1;
        } else if (found->rta_type == IFLA_IFNAME) {
          size_t bytes = strnlen(RTA_DATA(found), RTA_PAYLOAD(found));
          if (bytes >= IFNAMSIZ) bytes = IFNAMSIZ - 1;
          memcpy(own_name, RTA_DATA(found), bytes);
          own_name[bytes] = '\0';
        }
      }
      if (has_mtu && own_name[0] != '\0') error = 0;
      break;
    }
  }
  free(reply);
  return error;
}

static napi_value device_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t netns_fd;
  if (!int_arg(env, argv[0], &netns_fd)) return NULL;
  char name[IFNAMSIZ];
  if (!string_arg(env, argv[1], name, sizeof name, "device name")) return NULL;
  if (name[0] == '\0') return throw_errno(env, EINVAL, name);
  // The socket belongs to the namespace it is made in, for good: only its making needs the switch.
  int home;
  int error = netns_enter(netns_fd, &home);
  if (error != 0) return throw_errno(env, error, "setns");
  int netlink = route_socket(&error);
  netns_leave(home);
  if (netlink < 0) return throw_errno(env, error, "netlink socket");
  uint32_t mtu = 0;
  char own_name[IFNAMSIZ];
  error = link_lookup(netlink, name, &mtu, own_name);
  close(netlink);
  if (error != 0) return throw_errno(env, error, name);
  return number(env, (int32_t)mtu);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      ADDON_FUNCTION("openTap", open_tap),
      ADDON_FUNCTION("connectUnix", connect_unix),
      ADDON_FUNCTION("sendWithRights", send_with_rights),
      ADDON_FUNCTION("peekRights", peek_rights),
      ADDON_FUNCTION("tapName", tap_name),
      ADDON_FUNCTION("peerPid", peer_pid),
      ADDON_FUNCTION("peerPidfd", peer_pidfd),
      ADDON_FUNCTION("pidfdExited", pidfd_exited),
      ADDON_FUNCTION("pidfdNetns", pidfd_netns),
      ADDON_FUNCTION("deviceMtu", device_mtu),
  };
  EXPORT_FUNCTIONS(env, exports, functions);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
