import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type KernelLink, applyEvent, changesView, emptyView, sysctlKeyId, sysctlName, sysctlPath } from '../../../guest/netd/kernel-view.js';
import { describeOperation } from '../../../guest/netd/plan.js';

const TEMPLATE = 'net/ipv4/conf/{}/forwarding';
// Names the kernel allows (1-15 bytes, no '/', NUL or blank, not "." or ".."), built of pieces
// that replacement patterns are made of, so that a name read as a pattern shows.
const linkName = fc
  .array(fc.constantFrom('a', 'Z', '9', '-', '.', '$', '&', "'", '`', '$&', "$'", '$`', '$$', '$<n>', '$1'), { minLength: 1, maxLength: 6 })
  .map((pieces) => pieces.join(''))
  .filter((name) => name.length <= 15 && name !== '.' && name !== '..');

function viewWith(name: string): ReturnType<typeof emptyView> {
  const view = emptyView();
  const link: KernelLink = { ifindex: 7, name, mac: '0a:b3:ec:80:a5:46', up: true, loopback: false, group: 0 };
  view.links.set(7, link);
  return view;
}

describe('a sysctl of a link, named after the link', () => {
  it("puts the link's name in as it is, '$' patterns too", () => {
    for (const name of ['a$&b', "x$'", 'x$`', '$$', '$1', 'p$<n>']) {
      expect(sysctlName(TEMPLATE, name)).toBe(`net/ipv4/conf/${name}/forwarding`);
      expect(sysctlPath({ ifindex: 7, template: TEMPLATE }, viewWith(name))).toBe(`/proc/sys/net/ipv4/conf/${name}/forwarding`);
      expect(describeOperation({ kind: 'sysctl', key: { ifindex: 7, template: TEMPLATE }, value: '1' }, () => name)).toBe(`sysctl net/ipv4/conf/${name}/forwarding=1`);
    }
  });

  it('is the template with its {} replaced by the name, for any name the kernel allows', () => {
    fc.assert(
      fc.property(linkName, (name) => {
        const path = sysctlPath({ ifindex: 7, template: TEMPLATE }, viewWith(name));
        expect(path).toBe(`/proc/sys/net/ipv4/conf/${name}/forwarding`);
      }),
    );
  });

  it('has no path for a link the view does not know, and a global one is the template as it is', () => {
    expect(sysctlPath({ ifindex: 9, template: TEMPLATE }, viewWith('eth0'))).toBeNull();
    expect(sysctlPath({ ifindex: null, template: 'net/ipv4/ip_forward' }, emptyView())).toBe('/proc/sys/net/ipv4/ip_forward');
  });
});

describe("a link's sysctls as read", () => {
  const V0: KernelLink = { ifindex: 7, name: 'v0', mac: '0a:b3:ec:80:a5:46', up: true, loopback: false, group: 0, mtu: 1500 };
  const DISABLE_IPV6 = sysctlKeyId({ ifindex: 7, template: 'net/ipv6/conf/{}/disable_ipv6' });
  const OTHER = sysctlKeyId({ ifindex: 8, template: 'net/ipv6/conf/{}/disable_ipv6' });

  it("are forgotten (to be read again) when the link's MTU changes: below 1280 the kernel takes its IPv6 away, and makes it afresh above", () => {
    const view = emptyView();
    applyEvent(view, { kind: 'link', op: 'new', link: V0 });
    view.sysctls.set(DISABLE_IPV6, '1');
    view.sysctls.set(OTHER, '1');
    // Anything else about the link changed: kept.
    applyEvent(view, { kind: 'link', op: 'new', link: { ...V0, up: false } });
    expect(view.sysctls.get(DISABLE_IPV6)).toBe('1');
    for (const mtu of [1000, 1500]) {
      const event = { kind: 'link', op: 'new', link: { ...V0, up: false, mtu } } as const;
      expect(changesView(view, event)).toBe(true);
      applyEvent(view, event);
      expect(view.sysctls.has(DISABLE_IPV6)).toBe(false);
      expect(view.sysctls.get(OTHER)).toBe('1');
      view.sysctls.set(DISABLE_IPV6, mtu < 1280 ? 'absent' : '1');
    }
  });
});
