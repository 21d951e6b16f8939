import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ANY_CLOSED_FLOW,
  IPPROTO_TCP,
  REAPED_TCP_STATES,
  TCP_CONNTRACK_STATES,
  closedFlowFilter,
  reapMatches,
  sourceNumbers,
  tcpStateMask,
} from '../../../guest/conntrack/closed-flows.js';
import { ipv4Number } from '../../../guest/conntrack/conntrack-filter.js';

const dotted = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((parts) => parts.join('.'));
/** An entry's family and original source: a dotted quad for IPv4, IPv6 text (a v4-mapped one included) for IPv6. */
const familySource = fc.oneof(
  dotted.map((source) => ({ family: 4 as const, originalSource: source })),
  fc.oneof(fc.ipV6(), dotted.map((quad) => `::ffff:${quad}`)).map((source) => ({ family: 6 as const, originalSource: source })),
);
const state = fc.constantFrom(...TCP_CONNTRACK_STATES);
const protocol = fc.oneof(fc.constant(IPPROTO_TCP), fc.constantFrom(1, 17, 132), fc.nat(255));

describe('reapMatches', () => {
  it('takes exactly the IPv4 TCP entries in TIME_WAIT or CLOSE whose original source is one of the sources given', () => {
    fc.assert(
      fc.property(fc.uniqueArray(dotted, { maxLength: 5 }), familySource, protocol, state, (sources, { family, originalSource }, proto, tcpState) => {
        const entry = { family, protocol: proto, tcpState: proto === IPPROTO_TCP ? tcpState : null, originalSource };
        const expected = family === 4 && proto === IPPROTO_TCP && (tcpState === 'TIME_WAIT' || tcpState === 'CLOSE') && sources.includes(originalSource);
        expect(reapMatches(closedFlowFilter(sources), entry)).toBe(expected);
      }),
    );
    // A list of sources names IPv4 entries: an IPv6 entry whose source text is in it is still not one.
    expect(reapMatches(closedFlowFilter(['::1']), { family: 6, protocol: IPPROTO_TCP, tcpState: 'CLOSE', originalSource: '::1' })).toBe(false);
  });

  it("the reaper's filter (any source) takes every TCP entry in TIME_WAIT or CLOSE, whoever opened it, IPv4 or IPv6, and nothing else", () => {
    expect(ANY_CLOSED_FLOW).toEqual({ sources: null, tcpStates: ['TIME_WAIT', 'CLOSE'] });
    fc.assert(
      fc.property(familySource, protocol, state, ({ family, originalSource }, proto, tcpState) => {
        const entry = { family, protocol: proto, tcpState: proto === IPPROTO_TCP ? tcpState : null, originalSource };
        const expected = proto === IPPROTO_TCP && (tcpState === 'TIME_WAIT' || tcpState === 'CLOSE');
        expect(reapMatches(ANY_CLOSED_FLOW, entry)).toBe(expected);
      }),
    );
  });

  it('never takes a live or half-closed flow, whatever its source; an empty list of sources takes nothing', () => {
    const live = TCP_CONNTRACK_STATES.filter((each) => !REAPED_TCP_STATES.includes(each));
    expect(live).toEqual(['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'SYN_SENT2']);
    fc.assert(
      fc.property(fc.option(fc.uniqueArray(dotted, { maxLength: 5 })), familySource, fc.constantFrom(...live), (sources, { family, originalSource }, tcpState) => {
        expect(reapMatches(closedFlowFilter(sources), { family, protocol: IPPROTO_TCP, tcpState, originalSource })).toBe(false);
      }),
    );
    expect(reapMatches(closedFlowFilter([]), { family: 4, protocol: IPPROTO_TCP, tcpState: 'TIME_WAIT', originalSource: '100.64.0.1' })).toBe(false);
  });
});

describe('the addon arguments', () => {
  it("set bit N of the mask for the state of the kernel's value N, and no other", () => {
    fc.assert(
      fc.property(fc.subarray([...TCP_CONNTRACK_STATES]), (states) => {
        const mask = tcpStateMask(states);
        TCP_CONNTRACK_STATES.forEach((each, value) => expect(((mask >>> value) & 1) === 1).toBe(states.includes(each)));
        expect(mask >>> TCP_CONNTRACK_STATES.length).toBe(0);
      }),
    );
    // linux/netfilter/nf_conntrack_tcp.h: TCP_CONNTRACK_TIME_WAIT 7, TCP_CONNTRACK_CLOSE 8.
    expect(tcpStateMask(REAPED_TCP_STATES)).toBe((1 << 7) | (1 << 8));
  });

  it('give the sources as numbers, or null when one is no dotted quad', () => {
    fc.assert(
      fc.property(fc.array(dotted, { maxLength: 5 }), (sources) => {
        expect([...(sourceNumbers(sources) ?? [])]).toEqual(sources.map(ipv4Number));
      }),
    );
    expect(sourceNumbers(['100.64.0.1', '100.64.0.300'])).toBeNull();
  });
});
