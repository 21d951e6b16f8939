import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_UPSTREAMS, parseResolvConf } from '../../../guest/dns/resolv-conf.js';
import { DnsError } from '../../../guest/dns/dns-error.js';
import { parseConfiguredUpstream, parseUpstream, sameUpstream, upstreamText } from '../../../guest/dns/upstream.js';

const anyIpv4 = fc.ipV4();
const anyPort = fc.integer({ min: 1, max: 65_535 });

describe('upstream addresses', () => {
  it('parses IPv4 with and without a port, and IPv6 bare, bracketed, with a port and with a zone', () => {
    expect(parseUpstream('192.0.2.53')).toMatchObject({ address: '192.0.2.53', port: 53, family: 4 });
    expect(parseUpstream('192.0.2.53:5353')).toMatchObject({ address: '192.0.2.53', port: 5353, family: 4 });
    expect(parseUpstream('2001:db8::1')).toMatchObject({ address: '2001:db8::1', port: 53, family: 6 });
    expect(parseUpstream('[2001:db8::1]')).toMatchObject({ address: '2001:db8::1', port: 53, family: 6 });
    expect(parseUpstream('[2001:db8::1]:5300')).toMatchObject({ address: '2001:db8::1', port: 5300, family: 6 });
    expect(parseUpstream('fe80::1%eth0')).toMatchObject({ address: 'fe80::1%eth0', port: 53, family: 6 });
  });

  it('round-trips through its text form', () => {
    fc.assert(
      fc.property(fc.oneof(anyIpv4, fc.ipV6()), anyPort, (address, port) => {
        const upstream = parseUpstream(address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
        expect(upstream).toMatchObject({ address, port, family: address.includes(':') ? 6 : 4 });
        expect(parseUpstream(upstreamText(upstream))).toEqual(upstream);
      }),
    );
  });

  // Eight 16-bit groups, written as ip-num would not: every group in full, or bare, upper case, or
  // with the longest run of zeros folded (the URL parser's form, RFC 5952).
  const anyGroups = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });
  const writings = (groups: readonly number[]): string[] => {
    const full = groups.map((group) => group.toString(16).padStart(4, '0')).join(':');
    return [full, full.toUpperCase(), groups.map((group) => group.toString(16)).join(':'), new URL(`http://[${full}]/`).hostname.slice(1, -1)];
  };

  it('tells upstreams apart by address and port, however the address is written', () => {
    fc.assert(
      fc.property(anyGroups, anyGroups, anyPort, anyPort, fc.nat(3), fc.nat(3), (a, b, portA, portB, i, j) => {
        const first = parseUpstream(`[${writings(a)[i] ?? ''}]:${portA}`);
        const second = parseUpstream(`[${writings(b)[j] ?? ''}]:${portB}`);
        const sameAddress = a.every((group, k) => group === b[k]);
        expect(sameUpstream(first, second)).toBe(sameAddress && portA === portB);
        expect(sameUpstream(first, parseUpstream(`[${writings(a)[(i + 1) % 4] ?? ''}]:${portA}`))).toBe(true);
      }),
    );
    expect(sameUpstream(parseUpstream('2001:DB8:0::1'), parseUpstream('2001:db8::1'))).toBe(true);
    expect(sameUpstream(parseUpstream('[2001:db8::1]:53'), parseUpstream('[2001:db8::1]:5353'))).toBe(false);
    expect(sameUpstream(parseUpstream('fe80::1%eth0'), parseUpstream('FE80::1%eth0'))).toBe(true);
    expect(sameUpstream(parseUpstream('fe80::1%eth0'), parseUpstream('fe80::1%eth1'))).toBe(false);
    expect(sameUpstream(parseUpstream('fe80::1%eth0'), parseUpstream('fe80::1'))).toBe(false);
    expect(sameUpstream(parseUpstream('fe80::1%2'), parseUpstream('fe80::1%eth0'))).toBe(false);
  });

  it('keeps the zone of a link-local address (fe80::/10), and drops one on any other IPv6 address, which Linux ignores: the same server', () => {
    // Names Linux takes: `+`, `@`, `%`, `]`, other UTF-8 among them (see the zone test below).
    const zone = fc.oneof(fc.constantFrom('eth0', 'lo', '2', 'up0.12', 'br+lan', 'veth@0', 'a]b', 'wlan%1', 'ä'), fc.stringMatching(/^[A-Za-z0-9_.-]{1,15}$/).filter((name) => name !== '.' && name !== '..'));
    const linkLocalGroups = fc.tuple(fc.integer({ min: 0xfe80, max: 0xfebf }), anyGroups).map(([first, rest]) => [first, ...rest.slice(1)]);
    fc.assert(
      fc.property(fc.oneof(anyGroups, linkLocalGroups), zone, anyPort, fc.nat(3), (groups, name, port, i) => {
        const written = writings(groups)[i] ?? '';
        const plain = parseUpstream(`[${written}]:${port}`);
        const zoned = parseUpstream(`[${written}%${name}]:${port}`);
        const linkLocal = ((groups[0] ?? 0) & 0xffc0) === 0xfe80;
        if (linkLocal) {
          expect(zoned).toMatchObject({ address: `${written}%${name}`, port, family: 6 });
          expect(sameUpstream(zoned, plain)).toBe(false);
        } else {
          // Counted apart, each was asked, and a zone naming no interface failed its every connect.
          expect(zoned).toEqual(plain);
          expect(zoned.address).not.toContain('%');
        }
      }),
    );
    expect(parseUpstream('2001:db8::1%eth0')).toEqual(parseUpstream('2001:db8::1'));
    expect(parseUpstream('[::1%lo]:5353')).toEqual(parseUpstream('[::1]:5353'));
    expect(parseUpstream('fe80::1%2')).toMatchObject({ address: 'fe80::1%2', family: 6 });
  });

  it("takes a zone exactly where Linux takes it for an interface's name (dev_valid_name), an index included, bare or in brackets, from resolv.conf and --dns-upstream alike", () => {
    // `+` and `@` were refused: a nameserver fe80::1%br+lan was skipped as "not an IP address".
    for (const zone of ['br+lan', 'veth@if5', 'eth0.12', 'wlan%1', 'a]b', 'x'.repeat(15), '2', 'ä', 'a\u3000b', '\u0001', '..a', '-']) {
      for (const text of [`fe80::1%${zone}`, `[fe80::1%${zone}]`, `[fe80::1%${zone}]:5353`]) {
        expect(parseUpstream(text), text).toMatchObject({ address: `fe80::1%${zone}`, family: 6 });
        expect(parseConfiguredUpstream(text), text).toEqual(parseUpstream(text));
      }
      expect(parseResolvConf(`nameserver fe80::1%${zone}\n`).upstreams, zone).toEqual([parseUpstream(`fe80::1%${zone}`)]);
    }
    // What Linux refuses (EINVAL): empty, 16 bytes or more, . or .., '/', ':', a blank (0xa0 is
    // one to the kernel, and inside à's UTF-8), NUL. A --dns-upstream so written is refused; a
    // resolv.conf nameserver is read as glibc reads it, the address without a zone (see below).
    for (const zone of ['', 'x'.repeat(16), 'ääääääää', '.', '..', 'a/b', 'a:b', 'a b', 'a\tb', 'là', 'a\u00a0b', 'a\u0000b']) {
      for (const text of [`fe80::1%${zone}`, `[fe80::1%${zone}]:53`]) {
        expect(() => parseConfiguredUpstream(text), JSON.stringify(text)).toThrow(expect.objectContaining({ kind: 'upstream-syntax' }) as DnsError);
      }
    }
    expect(parseResolvConf('nameserver fe80::1%a/b\nnameserver fe80::1%up+0\n')).toMatchObject({
      upstreams: [parseUpstream('fe80::1%up+0')],
      skipped: [],
      withoutZone: [{ upstream: parseUpstream('fe80::1'), zone: { written: 'a/b', problem: "'/' is not allowed in an interface's name" } }],
    });
    // At a line's end too (JavaScript's trim() took such a blank off: another interface's name),
    // whereas a CR (a CRLF file) or a space there is no part of it.
    for (const zone of ['a\u3000', 'b\u2000', 'c\u205f', 'd\ufeff']) {
      expect(parseResolvConf(`nameserver fe80::1%${zone}\n`).upstreams, JSON.stringify(zone)).toEqual([parseUpstream(`fe80::1%${zone}`)]);
    }
    expect(parseResolvConf('nameserver fe80::1%eth0 \r\nnameserver fe80::1%eth1\r\n').upstreams).toEqual([parseUpstream('fe80::1%eth0'), parseUpstream('fe80::1%eth1')]);
  });

  it("reads a resolv.conf nameserver's zone as glibc does: a name up to a ':' (an alias label, which the kernel's look-up cuts off), an index of any length, and any other as none", () => {
    // Alias labels (`eth0:1`) were skipped as "not an IP address"; so were indexes of 16 digits
    // or more (glibc reads leading zeros), an empty zone (none to glibc), and any zone on an
    // address that is not link-local, which glibc and Linux ignore: the provider's programs ask there.
    for (const zone of ['eth0:1', 'br+lan:x/y', 'a:b', 'e:123456789012', '2:1', `${'0'.repeat(16)}2`, `${'0'.repeat(63)}2`, `0${'2147483647'.padStart(20, '0')}`]) {
      for (const [text, port] of [
        [`fe80::1%${zone}`, 53],
        [`[fe80::1%${zone}]`, 53],
        [`[fe80::1%${zone}]:5353`, 5353],
      ] as const) {
        expect(parseUpstream(text), text).toMatchObject({ address: `fe80::1%${zone}`, port, family: 6 });
        // A --dns-upstream takes an interface's name or index alone: one so written is refused.
        expect(() => parseConfiguredUpstream(text), text).toThrow(expect.objectContaining({ kind: 'upstream-syntax' }) as DnsError);
      }
      expect(parseResolvConf(`nameserver fe80::1%${zone}\n`), zone).toEqual({ upstreams: [parseUpstream(`fe80::1%${zone}`)], skipped: [], legacyIpv4: [], withoutZone: [], indented: [] });
    }
    // None to glibc: empty; 16 bytes or more (if_nametoindex refuses them) and no number; a
    // name before a ':' the kernel never gives; a number beyond 32 bits (its scope id), or 0
    // (scope id 0: no interface's, and too long for a name: it was tried again for ever). Nor
    // one above 2^31 - 1 that could be no name: glibc's scope id, but no interface can have it
    // (Linux's indexes are ints), and it too was tried again for ever.
    // Each listed with what is wrong with its zone (it was said to be "without a zone").
    const notIndex = "the zone is no interface's index (Linux's are 1 to 2147483647), and too long for an interface's name (15 bytes at most)";
    const tooLong = "the zone is longer than an interface's name can be (15 bytes at most)";
    for (const [zone, problem] of [
      ['', 'the zone is empty'],
      ['eth0:1234567890a', tooLong],
      [':1', "the zone has no interface's name before its ':'"],
      ['a/b:1', "'/' is not allowed in an interface's name"],
      ['.:1', "'.' is no interface's name"],
      ['..', "'..' is no interface's name"],
      ['a\vb', "a blank is not allowed in an interface's name"],
      ['là', "the byte 0xa0, a blank to the kernel (UTF-8 characters such as 'à' hold it), is not allowed in an interface's name"],
      [`${'0'.repeat(16)}4294967296`, notIndex],
      ['12345678901234567890', notIndex],
      [`${'1'.repeat(16)}x`, tooLong],
      ['0'.repeat(16), notIndex],
      ['0'.repeat(40), notIndex],
      [`${'0'.repeat(16)}2147483648`, notIndex],
      [`0${'4294967295'.padStart(20, '0')}`, notIndex],
    ] as const) {
      expect(parseResolvConf(`nameserver fe80::1%${zone}\nnameserver [fe80::2%${zone}]:5353\nnameserver fe80::1\n`), JSON.stringify(zone)).toEqual({
        upstreams: [],
        skipped: [],
        legacyIpv4: [],
        withoutZone: [
          { upstream: parseUpstream('fe80::1'), zone: { written: zone, problem } },
          { upstream: parseUpstream('[fe80::2]:5353'), zone: { written: zone, problem } },
          { upstream: parseUpstream('fe80::1'), zone: undefined },
        ],
        indented: [],
      });
      for (const [text, plain] of [
        [`2001:db8::1%${zone}`, '2001:db8::1'],
        [`[2001:db8::1%${zone}]:5353`, '[2001:db8::1]:5353'],
        [`::ffff:192.0.2.1%${zone}`, '192.0.2.1'],
      ] as const) {
        expect(parseUpstream(text), text).toEqual(parseUpstream(plain));
        expect(parseResolvConf(`nameserver ${text}\n`).upstreams, text).toEqual([parseUpstream(plain)]);
      }
    }
    expect(sameUpstream(parseUpstream('fe80::1%'), parseUpstream('fe80::1'))).toBe(true);
  });

  it('takes an IPv4-mapped IPv6 address for the IPv4 address it reaches, and nothing else for it', () => {
    fc.assert(
      fc.property(anyIpv4, anyIpv4, anyPort, (a, b, port) => {
        const octets = a.split('.').map(Number);
        const hex = `${(((octets[0] ?? 0) << 8) | (octets[1] ?? 0)).toString(16)}:${(((octets[2] ?? 0) << 8) | (octets[3] ?? 0)).toString(16)}`;
        for (const mapped of [`::ffff:${a}`, `::FFFF:${hex}`, `0:0:0:0:0:ffff:${a}`]) {
          expect(sameUpstream(parseUpstream(`[${mapped}]:${port}`), parseUpstream(`${a}:${port}`))).toBe(true);
          expect(sameUpstream(parseUpstream(`[${mapped}]:${port}`), parseUpstream(`${b}:${port}`))).toBe(a === b);
        }
        // Not the IPv4-compatible form (::a.b.c.d), nor NAT64 (64:ff9b::/96): other addresses.
        expect(sameUpstream(parseUpstream(`[::${a}]:${port}`), parseUpstream(`${a}:${port}`))).toBe(false);
        expect(sameUpstream(parseUpstream(`[64:ff9b::${a}]:${port}`), parseUpstream(`${a}:${port}`))).toBe(false);
      }),
    );
  });

  it('refuses anything else with an upstream-syntax error', () => {
    for (const text of ['', 'dns.example', '192.0.2.1:0', '192.0.2.1:65536', '192.0.2.1:x', '192.0.2.256', '[192.0.2.1]:53', '2001:db8::1:53:x', 'a'.repeat(200)]) {
      expect(() => parseUpstream(text)).toThrow(expect.objectContaining({ kind: 'upstream-syntax' }) as DnsError);
    }
    fc.assert(
      fc.property(fc.string({ maxLength: 100 }), (text) => {
        try {
          parseUpstream(text);
        } catch (error) {
          expect(error).toBeInstanceOf(DnsError);
        }
      }),
    );
  });
});

describe('resolv.conf', () => {
  it('reads the nameserver lines in order and ignores comments and other keywords', () => {
    const text = [
      '# Generated by Connection Manager',
      '; another comment',
      'search example.test',
      'nameserver 192.0.2.53',
      'nameserver\t192.0.2.54   # trailing words are ignored',
      '#nameserver 192.0.2.99',
      'options edns0 timeout:1',
      'nameserver 2001:db8::53',
      'nameserver dns.example',
      'nameserver 192.0.2.53',
      'nameserver',
      'nameserver 198.51.100.1:5353',
    ].join('\n');
    const conf = parseResolvConf(text);
    expect(conf.upstreams.map(upstreamText)).toEqual(['192.0.2.53:53', '192.0.2.54:53', '[2001:db8::53]:53', '198.51.100.1:5353']);
    expect(conf.skipped).toEqual(['dns.example']);
  });

  it('reads a nameserver line only where the keyword starts it, as glibc does, listing an indented one apart', () => {
    // An indented line was read: the forwarder asked a server the provider's own programs never ask.
    const text = [
      '  nameserver 192.0.2.1',
      '\tnameserver\t192.0.2.2',
      ' \t nameserver [2001:db8::1]:5353  ',
      '\vnameserver 192.0.2.3\r',
      'nameserver 192.0.2.53',
      '  # nameserver 192.0.2.4',
      ' ;nameserver 192.0.2.5',
      '  nameservers 192.0.2.6',
      '  nameserver',
      `  nameserver ${'1'.repeat(100)}`,
    ].join('\n');
    expect(parseResolvConf(text)).toEqual({
      upstreams: [parseUpstream('192.0.2.53')],
      skipped: [],
      legacyIpv4: [],
      withoutZone: [],
      indented: ['nameserver 192.0.2.1', 'nameserver\t192.0.2.2', 'nameserver [2001:db8::1]:5353', 'nameserver 192.0.2.3', `nameserver ${'1'.repeat(69)}`],
    });
    const many = Array.from({ length: 20 }, (_, i) => ` nameserver 192.0.2.${i + 1}`).join('\n');
    expect(parseResolvConf(many).indented).toHaveLength(MAX_UPSTREAMS);
  });

  it('ends a line at its first NUL, as glibc reads it (a C string), the rest of that line ignored and the next one read', () => {
    // The NUL and what followed it were kept in the value: `192.0.2.1\0junk` was skipped, no upstream.
    const text = [
      'nameserver 192.0.2.1\0junk',
      'nameserver 192.0.2.2\0',
      'nameserver 192.0.2.3 \0nameserver 192.0.2.99',
      'nameserver fe80::1%eth0\0:5353',
      'nameserver\0 192.0.2.98',
      '\0nameserver 192.0.2.97',
      '#\0\nnameserver 192.0.2.4',
      '  nameserver 192.0.2.5\0junk',
    ].join('\n');
    expect(parseResolvConf(text)).toEqual({
      upstreams: ['192.0.2.1', '192.0.2.2', '192.0.2.3', 'fe80::1%eth0', '192.0.2.4'].map((address) => parseUpstream(address)),
      skipped: [],
      legacyIpv4: [],
      withoutZone: [],
      indented: ['nameserver 192.0.2.5'],
    });
  });

  it('reads any resolv.conf as it reads the same with anything after a NUL added to its lines', () => {
    const line = fc.oneof(
      fc.tuple(fc.oneof(anyIpv4, fc.ipV6()), fc.constantFrom('', ' ', '\t', '\r')).map(([ip, after]) => `nameserver ${ip}${after}`),
      fc.constantFrom('', 'search a.test', '# comment', ' nameserver 192.0.2.7', 'nameserver', 'nameserver fe80::1', 'nameserver fe80::1%eth0'),
    );
    const afterNul = fc.string({ maxLength: 20 }).map((junk) => junk.replace(/\n/g, ''));
    fc.assert(
      fc.property(fc.array(fc.tuple(line, fc.option(afterNul, { nil: undefined })), { maxLength: 12 }), (lines) => {
        const clean = parseResolvConf(lines.map(([text]) => text).join('\n'));
        const withNuls = parseResolvConf(lines.map(([text, junk]) => (junk === undefined ? text : `${text}\0${junk}`)).join('\n'));
        expect(withNuls).toEqual(clean);
      }),
    );
  });

  it("reads a bare IPv4 nameserver as glibc does, in inet_aton's forms too, as the dotted address it names, listing each so written with what it is read as", () => {
    // Each was skipped as "not an IP address": glibc's resolver asks them (010.0.0.1 as 8.0.0.1).
    const written = ['010.0.0.1', '127.1', '0x7f.0.0.2', '0X7F.3', '3221225985', '192.0.565', '192.0.2.010', '0300.0.02.065', '00000000000000000000000000000001.1'];
    const conf = parseResolvConf([...written, '192.0.2.53', '127.0.0.1', '192.0.2.1:5353', '127.1:5353', '0x7f.1%eth0'].map((value) => `nameserver ${value}`).join('\n'));
    const read = ['8.0.0.1', '127.0.0.1', '127.0.0.2', '127.0.0.3', '192.0.2.1', '192.0.2.53', '192.0.2.8', '192.0.2.53', '1.0.0.1'];
    expect(conf).toEqual({
      // Duplicates dropped however written; with a port (ours, not glibc's), dotted decimal alone.
      upstreams: ['8.0.0.1', '127.0.0.1', '127.0.0.2', '127.0.0.3', '192.0.2.1', '192.0.2.53', '192.0.2.8', '1.0.0.1', '192.0.2.1:5353'].map((text) => parseUpstream(text)),
      skipped: ['127.1:5353', '0x7f.1%eth0'],
      legacyIpv4: written.slice(0, MAX_UPSTREAMS).map((value, i) => ({ written: value, address: read[i] })),
      withoutZone: [],
      indented: [],
    });
    for (const [i, value] of written.entries()) expect(parseUpstream(value), value).toEqual(parseUpstream(read[i] ?? ''));
    // What inet_aton refuses: trailing junk ('#' and ';' end no value: only a line that begins
    // with one is a comment), an empty part, a part too large for its place, 08, 0x without digits.
    for (const value of ['1.2.3.4.5', '256.1.1.1', '1.2.3.256', '1.2.65536', '1.16777216', '4294967296', '0x', '08.1.1.1', '1..2', '1.2.3.', '.1.2.3', '127.1x', '127.1#comment', '127.1;x', '1.2.3.4\vx', '0x1g', '-1', '+1']) {
      expect(parseResolvConf(`nameserver ${value}\n`), JSON.stringify(value)).toMatchObject({ upstreams: [], legacyIpv4: [] });
    }
    // A --dns-upstream takes dotted decimal alone.
    expect(() => parseConfiguredUpstream('127.1')).toThrow(expect.objectContaining({ kind: 'upstream-syntax' }) as DnsError);
  });

  it("reads any IPv4 value as glibc's own function does (__inet_aton_exact, which its resolver reads nameservers with)", () => {
    // Values of inet_aton's alphabet, and numbers written in its forms, as a resolv.conf value
    // (no space or tab: a value ends at one).
    const inDigits = fc.oneof(
      fc.nat(300).map(String),
      fc.nat().map((n) => `0x${n.toString(16)}`),
      fc.nat().map((n) => `0${n.toString(8)}`),
      fc.tuple(fc.nat(20), fc.nat(0xffff)).map(([zeros, n]) => `${'0'.repeat(zeros)}${n}`),
      fc.bigInt({ min: 0n, max: 2n ** 40n }).map(String),
    );
    const value = fc.oneof(
      fc.array(inDigits, { minLength: 1, maxLength: 5 }).map((parts) => parts.join('.')),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefxX.'.split(''), '8', '9', '\v', '\r', '%', ':', '+', '-', 'g', '\u0661'), minLength: 1, maxLength: 16 }),
    );
    // Blanks that end a line are no part of its value (a CRLF file's CR: our reading, on purpose).
    const values = fc.sample(value, 4000).filter((text) => !/[\r\v]$/.test(text));
    // glibc's resolver parses a nameserver with __inet_aton_exact (res_init.c); Python's ctypes
    // calls it from the C library itself.
    const script = [
      'import ctypes, json, sys',
      "exact = ctypes.CDLL('libc.so.6').__inet_aton_exact",
      'out = []',
      'for s in json.load(sys.stdin):',
      '    b = ctypes.create_string_buffer(4)',
      "    out.append('.'.join(map(str, b.raw)) if exact(s.encode(), b) else None)",
      'json.dump(out, sys.stdout)',
    ].join('\n');
    const glibc = JSON.parse(execFileSync('python3', ['-c', script], { input: JSON.stringify(values), encoding: 'utf8' })) as (string | null)[];
    expect(glibc).toHaveLength(values.length);
    // Enough values glibc takes for the comparison to mean something: about one in nine of a
    // sample is (one run had 375 of 3882, under a tenth, and failed here); a twentieth is far below any sample's.
    expect(glibc.filter((address) => address !== null).length).toBeGreaterThan(values.length / 20);
    const differing = values.flatMap((text, i) => {
      const address = parseResolvConf(`nameserver ${text}\n`).upstreams.find((upstream) => upstream.family === 4)?.address ?? null;
      return address === glibc[i] ? [] : [{ text, ours: address, glibc: glibc[i] }];
    });
    expect(differing).toEqual([]);
  });

  it('drops a nameserver listed again under another spelling of its address', () => {
    const conf = parseResolvConf(['nameserver 2001:db8::53', 'nameserver 2001:DB8:0:0::53', 'nameserver 192.0.2.53', 'nameserver ::ffff:192.0.2.53', 'nameserver [::ffff:c000:235]:53'].join('\n'));
    expect(conf.upstreams.map(upstreamText)).toEqual(['[2001:db8::53]:53', '192.0.2.53:53']);
  });

  it('takes an IPv4-mapped nameserver with a zone as its IPv4 address, as glibc does (a --dns-upstream so written is refused)', () => {
    const conf = parseResolvConf(['nameserver ::ffff:192.0.2.53%eth1', 'nameserver 192.0.2.53', 'nameserver ::ffff:198.51.100.1%nosuch'].join('\n'));
    expect(conf).toEqual({ upstreams: [parseUpstream('192.0.2.53'), parseUpstream('198.51.100.1')], skipped: [], legacyIpv4: [], withoutZone: [], indented: [] });
  });

  it('drops a nameserver listed again with a zone on an address that is not link-local, as glibc and Linux ignore it, and keeps link-local ones per zone', () => {
    const conf = parseResolvConf(
      ['nameserver 2001:db8::53%eth0', 'nameserver 2001:db8::53', 'nameserver 2001:db8::53%nosuch', 'nameserver fe80::53%eth0', 'nameserver fe80::53%2', 'nameserver fe80::53%eth0'].join('\n'),
    );
    expect(conf.upstreams.map(upstreamText)).toEqual(['[2001:db8::53]:53', '[fe80::53%eth0]:53', '[fe80::53%2]:53']);
  });

  it('leaves out a link-local nameserver without a zone, listing it apart (each once), and keeps the others', () => {
    // It was taken, and every connect to it refused by the kernel (EINVAL), tried again for ever.
    const conf = parseResolvConf(['nameserver fe80::1', 'nameserver 192.0.2.53', 'nameserver FE80:0::1', 'nameserver [fe80::2]:5353', 'nameserver fe80::1%eth0', 'nameserver 2001:db8::1'].join('\n'));
    expect(conf.upstreams.map(upstreamText)).toEqual(['192.0.2.53:53', '[fe80::1%eth0]:53', '[2001:db8::1]:53']);
    expect(conf.withoutZone).toEqual([
      { upstream: parseUpstream('fe80::1'), zone: undefined },
      { upstream: parseUpstream('[fe80::2]:5353'), zone: undefined },
    ]);
    expect(parseResolvConf('nameserver febf::1\n')).toMatchObject({ upstreams: [], withoutZone: [{ upstream: parseUpstream('febf::1'), zone: undefined }] });
    // Neither an address beyond fe80::/10 nor an IPv4-mapped one needs a zone.
    expect(parseResolvConf('nameserver fec0::1\nnameserver ::ffff:192.0.2.1\n')).toMatchObject({ withoutZone: [] });
  });

  it('finds exactly the listed nameservers among any mix of other lines, all of them (the forwarder takes the first it can use), no duplicates', () => {
    const nameserverLine = fc.tuple(anyIpv4, fc.option(anyPort, { nil: undefined })).map(([ip, port]) => ({
      line: `nameserver ${ip}${port === undefined ? '' : `:${port}`}`,
      text: `${ip}:${port ?? 53}`,
    }));
    const otherLine = fc.oneof(
      fc.constant(''),
      fc.string({ maxLength: 40 }).map((s) => `# ${s}`),
      fc.string({ maxLength: 40 }).map((s) => `; ${s}`),
      fc.constantFrom('search a.test b.test', 'domain a.test', 'options ndots:2', 'sortlist 192.0.2.0/24'),
      fc.ipV4().map((ip) => `#nameserver ${ip}`),
      // Not nameserver lines to glibc: the keyword must start the line.
      fc.tuple(fc.stringMatching(/^[ \t\v\f\r]{1,3}$/), fc.ipV4()).map(([blanks, ip]) => `${blanks}nameserver ${ip}`),
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(nameserverLine, otherLine.map((line) => ({ line, text: undefined }))), { maxLength: 30 }), (lines) => {
        const expected = [...new Set(lines.flatMap((l) => (l.text === undefined ? [] : [l.text])))];
        const conf = parseResolvConf(lines.map((l) => l.line).join('\n'));
        expect(conf.upstreams.map(upstreamText)).toEqual(expected);
      }),
    );
  });

  it('never throws on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 500 }), (text) => {
        const conf = parseResolvConf(text);
        expect(conf.upstreams.length).toBeLessThanOrEqual(text.split('\n').length);
        expect(conf.skipped.length).toBeLessThanOrEqual(MAX_UPSTREAMS);
      }),
    );
  });
});
