// The services as the agent tells them of its links: DHCP's failure (a link socket not opened,
// tried again on its own) holds DNS back no more, and DNS hears of every change of routes.
import { expect, it } from 'vitest';
import type { DhcpServer } from '../../../guest/dhcp/dhcp-server.js';
import { DhcpError } from '../../../guest/dhcp/dhcp-error.js';
import type { DnsForwarder } from '../../../guest/dns/forwarder.js';
import { ProviderServices } from '../../../guest/netd/provider-ports.js';

const LINK = { ifname: 'vm3', ifindex: 3, id: 3, clientIp: '100.64.0.3', clientMac: '0A:B3:EC:00:00:03' };

function fakes(): { dhcp: DhcpServer; dns: DnsForwarder; calls: string[] } {
  const calls: string[] = [];
  const dhcp = {
    setLinks: () => {
      calls.push('dhcp.setLinks');
      return Promise.reject(new DhcpError('socket', '1 link(s) not served yet (tried again on their own while the link exists): vm3: Too many open files'));
    },
  } as unknown as DhcpServer;
  const dns = {
    setUpstreamLink: () => (calls.push('dns.setUpstreamLink'), Promise.resolve()),
    rebind: () => (calls.push('dns.rebind'), Promise.resolve()),
    routesChanged: () => void calls.push('dns.routesChanged'),
  } as unknown as DnsForwarder;
  return { dhcp, dns, calls };
}

it("binds DNS though DHCP could not open a link's socket, then says DHCP's failure (it was the netns test's, before run refused to start without CAP_NET_RAW)", async () => {
  const { dhcp, dns, calls } = fakes();
  await expect(new ProviderServices(dhcp, dns).linksChanged([LINK], null)).rejects.toThrow(/not served yet .*Too many open files/);
  expect(calls).toEqual(['dhcp.setLinks', 'dns.setUpstreamLink', 'dns.rebind']);
});

it('tells DNS of a change of routes', () => {
  const { dhcp, dns, calls } = fakes();
  new ProviderServices(dhcp, dns).routesChanged();
  expect(calls).toEqual(['dns.routesChanged']);
});
