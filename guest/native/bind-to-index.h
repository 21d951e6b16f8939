// Binding a socket to one link by its index, shared by the addons that make sockets themselves
// (guest/native/udp-batch.c; the DHCP link sockets, which raw-socket makes, do the same through
// its setOption and getOption: guest/dhcp/link-socket.ts, with dhcp-filter.c's option number).
//
// Why by index, not name (SO_BINDTODEVICE): the agent knows its links by index, and a socket
// opened again later (a retry after the link went) must bind the device the agent configured or
// fail, never another device that took the name meanwhile.
#ifndef SPECTRUM_BIND_TO_INDEX_H
#define SPECTRUM_BIND_TO_INDEX_H

#include <errno.h>
#include <net/if.h>
#include <sys/socket.h>

// SO_BINDTOIFINDEX (Linux 5.1; ENOPROTOOPT before), then the device's name read back: the kernel
// takes an index no device has (the socket would then reach nothing), and reading the name fails
// with ENODEV for one. 0, or the errno; `*step` names the call that failed.
__attribute__((unused)) static int bind_to_index(int fd, int ifindex, const char **step) {
  *step = "SO_BINDTOIFINDEX";
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTOIFINDEX, &ifindex, sizeof ifindex) != 0) return errno;
  char name[IFNAMSIZ];
  socklen_t length = sizeof name;
  *step = "SO_BINDTODEVICE (read back)";
  if (getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, &length) != 0) return errno;
  return 0;
}

#endif
