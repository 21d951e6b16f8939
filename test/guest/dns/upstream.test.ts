// Configured upstreams at which no resolver can be: refused at setup, each with its reason. (Their
// parsing and comparison: resolv-conf.test.ts.)
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DnsError } from '../../../guest/dns/dns-error.js';
import { startDnsForwarder } from '../../../guest/dns/forwarder.js';
import { parseResolvConf } from '../../../guest/dns/resolv-conf.js';
import {
  UnusableUpstreamError,
  endpointText,
  parseConfiguredUpstream,
  parseUpstream,
  unusableUpstream,
  upstreamKey,
  upstreamText,
  withoutDuplicates,
  type Upstream,
} from '../../../guest/dns/upstream.js';

const anyPort = fc.integer({ min: 1, max: 65_535 });
const octets = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
const dotted = (parts: readonly number[]): string => parts.join('.');

/** What the refusal of an IPv4 address should say, from its octets alone; undefined: none. */
function expectedIpv4Refusal([a, b, c, d]: readonly number[]): RegExp | undefined {
  if (a === 0 && b === 0 && c === 0 && d === 0) return /^the unspecified address names no server: give the resolver's own address \(127\.0\.0\.1 or ::1 for one on this VM\)$/;
  if (a === 255 && b === 255 && c === 255 && d === 255) return /^the broadcast address names no one server: give the resolver's own address$/;
  if (a !== undefined && a >= 224 && a <= 239) return /^a multicast address \(224\.0\.0\.0\/4\) names no one server: give the resolver's own address$/;
  if (a === 0) return /^an address in 0\.0\.0\.0\/8 \("this network"\) is no destination: give the resolver's own address$/;
  return undefined;
}

describe('unusableUpstream', () => {
  it('refuses exactly the unspecified, broadcast and multicast IPv4 addresses and the rest of 0.0.0.0/8, however written, whatever the port', () => {
    // The addresses refused are a handful among 2^32: draw them often. (0.0.0.0/8 beyond 0.0.0.0
    // was taken: Linux sends there by the default route, and no server can be there.)
    const special = fc.constantFrom(
      [0, 0, 0, 0],
      [0, 0, 0, 1],
      [0, 1, 2, 3],
      [0, 255, 255, 255],
      [1, 0, 0, 0],
      [255, 255, 255, 255],
      [224, 0, 0, 251],
      [239, 255, 255, 250],
      [223, 255, 255, 255],
      [240, 0, 0, 1],
      [127, 0, 0, 1],
      [169, 254, 0, 1],
    );
    fc.assert(
      fc.property(fc.oneof(octets, special), anyPort, (parts, port) => {
        const expected = expectedIpv4Refusal(parts);
        const [a = 0, b = 0, c = 0, d = 0] = parts;
        const hex = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
        for (const text of [`${dotted(parts)}:${port}`, `[::ffff:${dotted(parts)}]:${port}`, `[::FFFF:${hex}]:${port}`]) {
          const reason = unusableUpstream(parseUpstream(text));
          if (expected === undefined) expect(reason).toBeUndefined();
          else expect(reason).toMatch(expected);
        }
      }),
    );
  });

  it('refuses exactly the unspecified IPv6 address, the multicast ones (ff00::/8), the IPv4-compatible ones (::/96 but :: and ::1) and the link-local ones without a zone', () => {
    const groups = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });
    const multicast = fc.tuple(fc.integer({ min: 0xff00, max: 0xffff }), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 })).map(([first, rest]) => [first, ...rest]);
    const linkLocal = fc.tuple(fc.integer({ min: 0xfe80, max: 0xfebf }), fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 })).map(([first, rest]) => [first, ...rest]);
    const compatible = fc.oneof(octets, fc.constantFrom([0, 0, 0, 1], [0, 0, 0, 2], [255, 255, 255, 255], [192, 0, 2, 53])).map(([a = 0, b = 0, c = 0, d = 0]) => [0, 0, 0, 0, 0, 0, (a << 8) | b, (c << 8) | d]);
    fc.assert(
      fc.property(fc.oneof(groups, multicast, compatible, linkLocal, fc.constant([0, 0, 0, 0, 0, 0, 0, 0])), anyPort, (parts, port) => {
        const text = `[${parts.map((group) => group.toString(16)).join(':')}]:${port}`;
        const reason = unusableUpstream(parseUpstream(text));
        const mapped = parts.slice(0, 5).every((group) => group === 0) && parts[5] === 0xffff;
        if (mapped) return; // an IPv4 address: the test above
        const [g6 = 0, g7 = 0] = parts.slice(6);
        const embedded = [g6 >> 8, g6 & 0xff, g7 >> 8, g7 & 0xff];
        if (parts.every((group) => group === 0)) expect(reason).toMatch(/^the unspecified address names no server/);
        else if ((parts[0] ?? 0) >= 0xff00) expect(reason).toBe("a multicast address (ff00::/8) names no one server: give the resolver's own address");
        else if (((parts[0] ?? 0) & 0xffc0) === 0xfe80) {
          // Taken, and every connect refused by the kernel (EINVAL: no link), for ever.
          const zoned = `${parts.map((group) => group.toString(16)).join(':')}%eth0`;
          expect(reason).toBe(
            `a link-local address (fe80::/10) is one on each link: Linux sends to it only through the link its zone names, and refuses it without one: give that link's name or index as its zone (${port === 53 ? zoned : `[${zoned}]:${port}`})`,
          );
        }
        else if (parts.slice(0, 6).every((group) => group === 0) && !(g6 === 0 && g7 === 1)) {
          // ::a.b.c.d: what was meant is offered where a resolver can be at a.b.c.d.
          const give = expectedIpv4Refusal(embedded) === undefined ? `give ${dotted(embedded)}${port === 53 ? '' : `:${port}`} for the IPv4 address` : "give the resolver's own address";
          expect(reason).toBe(`an IPv4-compatible address (::/96, deprecated) is asked over IPv6, as any IPv6 address, where no resolver is: ${give}`);
        } else expect(reason).toBeUndefined();
      }),
    );
  });

  it("takes a resolver on this VM (loopback), the gateway (a chained provider's upstream provider), and a link-local one with its zone, by name or index", () => {
    for (const text of ['127.0.0.1', '127.0.0.53:53', '[::1]:5353', '169.254.0.1', '192.0.2.53', 'fe80::1%eth0', '[fe80::1%eth0]:53', 'fe80::1%2', '[febf::1%12]:5353']) {
      expect(unusableUpstream(parseUpstream(text)), text).toBeUndefined();
      expect(parseConfiguredUpstream(text), text).toEqual(parseUpstream(text));
    }
  });
});

describe('parseUpstream, an IPv4-mapped IPv6 address', () => {
  it('is the IPv4 address it reaches, sent to over IPv4: an IPv6-only socket connected to it gets ENETUNREACH', () => {
    // It was kept as IPv6 (family 6): the forwarder's IPv6-only sockets never reached it, warning
    // "no route to it" for ever.
    fc.assert(
      fc.property(fc.ipV4(), anyPort, fc.constantFrom('', '%lo'), (address, port, zone) => {
        const octets = address.split('.').map(Number);
        const hex = `${(((octets[0] ?? 0) << 8) | (octets[1] ?? 0)).toString(16)}:${(((octets[2] ?? 0) << 8) | (octets[3] ?? 0)).toString(16)}`;
        const plain = parseUpstream(`${address}:${port}`);
        for (const mapped of [`::ffff:${address}`, `::FFFF:${hex}`, `0:0:0:0:0:ffff:${address}`]) {
          expect(parseUpstream(`[${mapped}${zone}]:${port}`)).toEqual(plain);
        }
      }),
    );
    // Not the IPv4-compatible form (::a.b.c.d), nor an IPv4-translated one (::ffff:0:a.b.c.d): IPv6 addresses.
    expect(parseUpstream('[::192.0.2.53]:53')).toMatchObject({ address: '::192.0.2.53', family: 6 });
    expect(parseUpstream('[::ffff:0:192.0.2.53]:53')).toMatchObject({ address: '::ffff:0:192.0.2.53', family: 6 });
  });
});

describe('parseConfiguredUpstream', () => {
  it('refuses an unusable address with its own kind, the value shown as the syntax errors show it', () => {
    for (const [text, reason] of [
      ['0.0.0.0', /^the unspecified address/],
      ['[::]:53', /^the unspecified address/],
      ['255.255.255.255:53', /^the broadcast address/],
      ['224.0.0.251', /^a multicast address \(224/],
      ['ff02::fb', /^a multicast address \(ff00/],
      ['[::ffff:0.0.0.0]:53', /^the unspecified address/],
      // With a zone as well: the kernel sends to the IPv4 address whatever the scope (they were taken).
      ['[::ffff:0.0.0.0%lo]:53', /^the unspecified address/],
      ['[::ffff:224.0.0.251%lo]:5353', /^a multicast address \(224/],
      // A usable one with a zone: asked over IPv4, the zone ignored without a word (it was taken so).
      ['[::ffff:192.0.2.53%eth1]:53', /^an IPv4-mapped address is asked over IPv4, where a zone \(%eth1\) picks no link \(the routes do\): give 192\.0\.2\.53$/],
      ['::FFFF:c000:235%nosuch', /: give 192\.0\.2\.53$/],
      ['[::ffff:127.0.0.1%lo]:5353', /\(%lo\).*: give 127\.0\.0\.1:5353$/],
      // IPv4-compatible (::a.b.c.d): taken, and asked over IPv6, where no resolver is.
      ['::255.255.255.255', /^an IPv4-compatible address \(::\/96, deprecated\) is asked over IPv6, as any IPv6 address, where no resolver is: give the resolver's own address$/],
      ['::1.2.3.4', /: give 1\.2\.3\.4 for the IPv4 address$/],
      ['[::c000:235]:5353', /^an IPv4-compatible address .*: give 192\.0\.2\.53:5353 for the IPv4 address$/],
      // 0.0.0.0/8 beyond 0.0.0.0: taken, and sent by the default route.
      ['0.1.2.3', /^an address in 0\.0\.0\.0\/8 \("this network"\) is no destination: give the resolver's own address$/],
      ['0.255.255.255:53', /^an address in 0\.0\.0\.0\/8/],
      ['[::ffff:0.0.0.1]:53', /^an address in 0\.0\.0\.0\/8/],
      // A zone on an IPv6 address that is not link-local: Linux ignores it (it was taken, and
      // counted apart from the same address without one).
      ['2001:db8::1%eth0', /^a zone \(%eth0\) picks a link only for a link-local address \(fe80::\/10\); Linux ignores it on any other, sending where the routes say: give 2001:db8::1$/],
      ['[2001:DB8::1%2]:5353', /\(%2\).*: give \[2001:DB8::1\]:5353$/],
      ['[::1%lo]:53', /\(%lo\).*: give ::1$/],
      // A link-local one without a zone: taken, and refused by the kernel at every connect (EINVAL).
      ['fe80::53', /^a link-local address \(fe80::\/10\) is one on each link: .*: give that link's name or index as its zone \(fe80::53%eth0\)$/],
      ['[FEBF::1]:5353', /as its zone \(\[FEBF::1%eth0\]:5353\)$/],
    ] as const) {
      let refusal: unknown;
      try {
        parseConfiguredUpstream(text);
      } catch (error) {
        refusal = error;
      }
      expect(refusal, text).toBeInstanceOf(UnusableUpstreamError);
      expect(refusal).toMatchObject({ kind: 'upstream-unusable', shown: JSON.stringify(text), reason: expect.stringMatching(reason) as string });
    }
  });

  it('leaves a bad text, port 0 included, to the syntax error, and takes what parseUpstream takes otherwise', () => {
    expect(() => parseConfiguredUpstream('192.0.2.1:0')).toThrow(expect.objectContaining({ kind: 'upstream-syntax', reason: 'port must be 1..65535' }) as DnsError);
    expect(() => parseConfiguredUpstream('resolver.example')).toThrow(expect.objectContaining({ kind: 'upstream-syntax' }) as DnsError);
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6().map((address) => `[${address}]`)), anyPort, (address, port) => {
        const text = `${address}:${port}`;
        const parsed = parseUpstream(text);
        if (unusableUpstream(parsed) === undefined) expect(parseConfiguredUpstream(text)).toEqual(parsed);
        else expect(() => parseConfiguredUpstream(text)).toThrow(UnusableUpstreamError);
      }),
    );
  });

  it('is what the forwarder checks its configured upstreams with, at start', async () => {
    // Refused before any socket is made; were it not, the forwarder is closed at once (its listen
    // address is none of this namespace's, and a connected UDP socket sends nothing by itself).
    const outcome = await startDnsForwarder({ listen: '192.0.2.1', upstreams: ['192.0.2.53', '239.255.255.250:1900'] }).then(
      async (forwarder) => {
        await forwarder.close();
        return 'started';
      },
      (error: unknown) => error,
    );
    expect(outcome).toMatchObject({
      kind: 'upstream-unusable',
      message: 'upstream "239.255.255.250:1900": a multicast address (224.0.0.0/4) names no one server: give the resolver\'s own address',
    });
  });
});

describe('withoutDuplicates', () => {
  /** One of a few servers, written one of the ways that name it (plainly, IPv4-mapped, the default port, another port). */
  const written = fc.tuple(fc.integer({ min: 1, max: 4 }), fc.constantFrom('plain', 'mapped', 'port53', 'mapped53', 'port5353', 'v6', 'v6long')).map(([host, how]) => {
    const v4 = `192.0.2.${host}`;
    const v6 = `2001:db8::${host}`;
    return { plain: v4, mapped: `::ffff:${v4}`, port53: `${v4}:53`, mapped53: `[::ffff:${v4}]:53`, port5353: `${v4}:5353`, v6, v6long: `[2001:DB8:0:0::${host}]:53` }[how];
  });

  it('keeps the first of each server (by upstreamKey), in order: what resolv.conf keeps of the same nameservers', () => {
    fc.assert(
      fc.property(fc.array(written, { maxLength: 24 }), (texts) => {
        const upstreams = texts.map(parseConfiguredUpstream);
        const kept = withoutDuplicates(upstreams);
        const keys = kept.map(upstreamKey);
        expect(new Set(keys).size).toBe(keys.length);
        // Each kept one is the first of its server, and they come in the order given.
        expect(kept).toEqual(upstreams.filter((upstream, index) => upstreams.findIndex((other) => upstreamKey(other) === upstreamKey(upstream)) === index));
        const resolvConf = parseResolvConf(texts.map((text) => `nameserver ${text}`).join('\n'));
        expect(resolvConf.upstreams).toEqual(kept);
      }),
    );
  });
});

describe('withoutDuplicates, given the interface each zone names now', () => {
  /** This VM's interfaces in the example: name to index. */
  const INTERFACES = new Map([
    ['eth0', 2],
    ['eth1', 3],
    ['up+0', 7],
  ]);
  /** A zone read as a connect reads it: a name, else a number some interface has; else none. */
  const indexOfZone = (zone: string): number | undefined => {
    const named = INTERFACES.get(zone);
    if (named !== undefined) return named;
    return [...INTERFACES.values()].includes(Number(zone)) ? Number(zone) : undefined;
  };
  const zoneIndex = (upstream: Upstream): number | undefined => {
    const percent = upstream.address.indexOf('%');
    return percent === -1 ? undefined : indexOfZone(upstream.address.slice(percent + 1));
  };

  it('keeps the first of a link-local server given by its link\'s name and by its index, and one whose zone names no interface as written', () => {
    const written = fc.record({
      host: fc.integer({ min: 1, max: 2 }),
      zone: fc.constantFrom('eth0', '2', '02', 'eth1', '3', 'up+0', '7', 'nosuch0', '9', 'late0'),
      port: fc.constantFrom(53, 5353),
      how: fc.constantFrom('bare', 'bracketed', 'upper'),
    });
    fc.assert(
      fc.property(fc.array(written, { maxLength: 16 }), (list) => {
        const texts = list.map(({ host, zone, port, how }) => {
          const address = how === 'upper' ? `FE80:0::${host}%${zone}` : `fe80::${host}%${zone}`;
          return how === 'bare' && port === 53 ? address : `[${address}]:${port}`;
        });
        const upstreams = texts.map(parseConfiguredUpstream);
        // The same server: the same address and port, and the same interface (where the zone
        // names one; else the same zone as written).
        const serverOf = (i: number): string => {
          const { host, zone, port } = list[i] ?? { host: 0, zone: '', port: 0 };
          const index = indexOfZone(zone);
          return `${host} ${port} ${index === undefined ? `zone ${zone}` : `link ${index}`}`;
        };
        const expected = upstreams.filter((_, i) => list.findIndex((_other, j) => serverOf(j) === serverOf(i)) === i);
        expect(withoutDuplicates(upstreams, zoneIndex)).toEqual(expected);
      }),
    );
    // The first kept, whichever way it was written.
    const [byName, byIndex] = [parseUpstream('fe80::1%eth0'), parseUpstream('fe80::1%2')];
    expect(withoutDuplicates([byName, byIndex], zoneIndex)).toEqual([byName]);
    expect(withoutDuplicates([byIndex, byName], zoneIndex)).toEqual([byIndex]);
    // Without the interfaces, zones compare as written.
    expect(withoutDuplicates([byName, byIndex])).toEqual([byName, byIndex]);
    // Another address, port, or interface is another server.
    expect(withoutDuplicates([byName, parseUpstream('fe80::2%2'), parseUpstream('[fe80::1%2]:5353'), parseUpstream('fe80::1%3')], zoneIndex)).toHaveLength(4);
  });
});

describe('endpointText', () => {
  it('brackets an IPv6 address, its zone within, and leaves IPv4 as it is', () => {
    expect(endpointText('fe80::1%eth0', 53)).toBe('[fe80::1%eth0]:53');
    expect(endpointText('::1', 5353)).toBe('[::1]:5353');
    expect(endpointText('192.0.2.53', 53)).toBe('192.0.2.53:53');
    fc.assert(
      fc.property(fc.ipV4(), fc.ipV6(), anyPort, (v4, v6, port) => {
        expect(endpointText(v4, port)).toBe(`${v4}:${port}`);
        expect(endpointText(v6, port)).toBe(`[${v6}]:${port}`);
      }),
    );
    // What upstreams are shown as.
    expect(upstreamText(parseUpstream('[fe80::1%eth0]:5353'))).toBe('[fe80::1%eth0]:5353');
  });
});
