/**
 * Sockets bound to one link by its index (SO_BINDTOIFINDEX: guest/native/bind-to-index.h), not
 * its name: what their failures are called, for the DHCP link sockets and the DNS forwarder's
 * sockets toward an upstream provider alike.
 */

/** Why a bind failed with ENOPROTOOPT. */
export const NO_BIND_TO_INDEX = 'this kernel has no SO_BINDTOIFINDEX (Linux 5.1 or later is needed)';

/** A link as a socket is bound to it: by index; the name is for messages. */
export interface BoundLink {
  readonly ifname: string;
  readonly ifindex: number;
}
