{
  "targets": [
    {
      "target_name": "udp_batch",
      "sources": ["guest/native/udp-batch.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "rtnl_events",
      "sources": ["guest/native/rtnl-events.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "dhcp_filter",
      "sources": ["guest/native/dhcp-filter.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "nft_run",
      "sources": ["guest/native/nft-run.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"],
      "libraries": ["-lnftables"]
    },
    {
      "target_name": "conntrack_purge",
      "sources": ["guest/native/conntrack-purge.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"],
      "libraries": ["-lnetfilter_conntrack"]
    },
    {
      "target_name": "rtnl",
      "sources": ["shared/native/rtnl.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "tap_fd",
      "sources": ["host/native/tap-fd.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    },
    {
      "target_name": "state_lock",
      "sources": ["host/native/state-lock.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
