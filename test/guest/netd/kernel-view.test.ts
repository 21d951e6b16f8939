import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type KernelLink, emptyView, sysctlName, sysctlPath } from '../../../guest/netd/kernel-view.js';
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
