// Running a few calls of the current thread inside another network namespace (setns there and
// back): sockets and tun devices opened meanwhile belong to that namespace for good. Shared by
// host/native/rtnl.c and host/native/tap-fd.c.
#ifndef SPECTRUM_NETNS_SWITCH_H
#define SPECTRUM_NETNS_SWITCH_H

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

// Enter the namespace `netns_fd`; *home keeps the thread's own. 0, or an errno (then nothing changed).
static int netns_enter(int netns_fd, int *home) {
  *home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (*home < 0) return errno;
  if (setns(netns_fd, CLONE_NEWNET) != 0) {
    int error = errno;
    close(*home);
    return error;
  }
  return 0;
}

// Back to the thread's own namespace. A thread that cannot return must not go on in the wrong one.
static void netns_leave(int home) {
  if (setns(home, CLONE_NEWNET) != 0) abort();
  close(home);
}

#endif
