// An RTM_GETLINK request for a device by name or by index, statistics left out (a device's answer is then a
// few KiB, its altnames aside). Shared by host/native/rtnl.c and host/native/tap-fd.c.
#ifndef SPECTRUM_GETLINK_REQUEST_H
#define SPECTRUM_GETLINK_REQUEST_H

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <string.h>

typedef union {
  uint8_t bytes[NLMSG_SPACE(sizeof(struct ifinfomsg)) + RTA_SPACE(IFNAMSIZ) + RTA_SPACE(sizeof(uint32_t))];
  struct nlmsghdr header;
} getlink_request;

// Fill `request` to look `name` up (1..IFNAMSIZ-1 bytes: the caller checks); flags and seq are
// the caller's. IFLA_IFNAME alone: the kernel looks it up among device names and altnames alike
// (an altname shorter than IFNAMSIZ, as every name here is, needs no IFLA_ALT_IFNAME).
static void getlink_request_by_name(getlink_request *request, const char *name) {
  size_t bytes = strnlen(name, IFNAMSIZ - 1);
  memset(request, 0, sizeof *request);
  struct nlmsghdr *header = &request->header;
  header->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  header->nlmsg_type = RTM_GETLINK;
  ((struct ifinfomsg *)NLMSG_DATA(header))->ifi_family = AF_UNSPEC;  // ifi_index 0: by name
  struct rtattr *attribute = (struct rtattr *)(request->bytes + NLMSG_ALIGN(header->nlmsg_len));
  attribute->rta_type = IFLA_IFNAME;
  attribute->rta_len = RTA_LENGTH(bytes + 1);
  memcpy(RTA_DATA(attribute), name, bytes);
  header->nlmsg_len = NLMSG_ALIGN(header->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
  attribute = (struct rtattr *)(request->bytes + header->nlmsg_len);
  attribute->rta_type = IFLA_EXT_MASK;
  attribute->rta_len = RTA_LENGTH(sizeof(uint32_t));
  uint32_t filter = RTEXT_FILTER_SKIP_STATS;
  memcpy(RTA_DATA(attribute), &filter, sizeof filter);
  header->nlmsg_len += RTA_ALIGN(attribute->rta_len);
}

// Fill `request` to look the device with index `ifindex` up (its own name comes back); as above.
__attribute__((unused)) static void getlink_request_by_index(getlink_request *request, int ifindex) {
  memset(request, 0, sizeof *request);
  struct nlmsghdr *header = &request->header;
  header->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  header->nlmsg_type = RTM_GETLINK;
  struct ifinfomsg *info = NLMSG_DATA(header);
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = ifindex;
  struct rtattr *attribute = (struct rtattr *)(request->bytes + NLMSG_ALIGN(header->nlmsg_len));
  attribute->rta_type = IFLA_EXT_MASK;
  attribute->rta_len = RTA_LENGTH(sizeof(uint32_t));
  uint32_t filter = RTEXT_FILTER_SKIP_STATS;
  memcpy(RTA_DATA(attribute), &filter, sizeof filter);
  header->nlmsg_len = NLMSG_ALIGN(header->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
}

#endif
