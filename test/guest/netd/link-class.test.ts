import { describe, expect, it } from 'vitest';
import { classifyLink } from '../../../guest/netd/link-class.js';
import { parseAllowPair } from '../../../guest/netd/allow-pair.js';
import { NetdError } from '../../../guest/netd/netd-error.js';
import { applyEvent, emptyView, neighbourKey, routeKey } from '../../../guest/netd/kernel-view.js';

const link = (mac: string, name = 'x', loopback = false) => ({ ifindex: 2, name, mac, up: true, loopback, group: 0 });

describe('link classification by MAC', () => {
  it('tells provider, client, physical and ignored links apart', () => {
    expect(classifyLink(link('0a:b3:ec:80:a5:46'), new Set())).toEqual({
      role: 'provider',
      id: 42310,
      clientIp: '100.64.165.70',
      clientMac: '0A:B3:EC:00:A5:46',
    });
    expect(classifyLink(link('0a:b3:ec:00:00:05'), new Set())).toEqual({ role: 'client', id: 5, ownIp: '100.64.0.5' });
    expect(classifyLink(link('52:54:00:12:34:56'), new Set())).toEqual({ role: 'uplink' });
    expect(classifyLink(link('00:00:00:00:00:00', 'lo', true), new Set()).role).toBe('ignored');
    expect(classifyLink(link('52:54:00:12:34:56', 'wan'), new Set(['wan'])).role).toBe('ignored');
    expect(classifyLink(link(''), new Set()).role).toBe('ignored');
    // Inter-VM MACs that cannot be decoded are never taken for physical NICs.
    expect(classifyLink(link('0a:b3:ec:41:00:01'), new Set()).role).toBe('ignored');
    expect(classifyLink(link('0a:b3:ec:80:ff:ff'), new Set()).role).toBe('ignored');
  });
});

describe('--allow-pair', () => {
  it('accepts client IPs and ids', () => {
    expect(parseAllowPair('100.64.0.5=7')).toEqual({ from: '100.64.0.5', to: '100.64.0.7' });
  });
  it.each(['', '5', '5=', '5=5', '5=6=7', '10.0.0.1=5', 'x=5'])('refuses %j with a NetdError', (text) => {
    expect(() => parseAllowPair(text)).toThrow(NetdError);
  });
});

describe('kernel view', () => {
  it('forgets addresses, routes, neighbours and sysctls of a removed link', () => {
    const view = emptyView();
    const l = link('0a:b3:ec:80:00:05');
    applyEvent(view, { kind: 'link', op: 'new', link: l });
    applyEvent(view, { kind: 'address', op: 'new', address: { ifindex: 2, ip: '169.254.0.1', prefixLength: 32, proto: 0 } });
    applyEvent(view, { kind: 'route', op: 'new', route: { dst: '100.64.0.5', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 } });
    applyEvent(view, { kind: 'neighbour', op: 'new', neighbour: { ifindex: 2, ip: '100.64.0.5', mac: 'aa', permanent: true } });
    view.sysctls.set('2:net/ipv6/conf/{}/disable_ipv6', '1');
    applyEvent(view, { kind: 'link', op: 'del', link: l });
    expect([view.links.size, view.addresses.size, view.routes.size, view.neighbours.size, view.sysctls.size]).toEqual([0, 0, 0, 0, 0]);
  });

  it('forgets routes and neighbours (not addresses) when a link goes down, as the kernel flushes them silently', () => {
    const view = emptyView();
    applyEvent(view, { kind: 'link', op: 'new', link: link('0a:b3:ec:80:00:05') });
    applyEvent(view, { kind: 'address', op: 'new', address: { ifindex: 2, ip: '169.254.0.1', prefixLength: 32, proto: 0 } });
    applyEvent(view, { kind: 'route', op: 'new', route: { dst: '100.64.0.5', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 } });
    applyEvent(view, { kind: 'neighbour', op: 'new', neighbour: { ifindex: 2, ip: '100.64.0.5', mac: 'aa', permanent: true } });
    applyEvent(view, { kind: 'link', op: 'new', link: { ...link('0a:b3:ec:80:00:05'), up: false } });
    expect(view.addresses.size).toBe(1);
    expect(view.routes.has(routeKey({ dst: '100.64.0.5', dstLength: 32, priority: 0 }))).toBe(false);
    expect(view.neighbours.has(neighbourKey({ ifindex: 2, ip: '100.64.0.5' }))).toBe(false);
  });
});
