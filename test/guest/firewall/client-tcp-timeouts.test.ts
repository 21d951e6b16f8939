import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CLIENT_CLOSED_TIMEOUT_SECONDS,
  CLIENT_UNCOUNTED_SECONDS,
  DEFAULT_CLIENT_TCP_TIMEOUTS,
  KERNEL_TCP_TIMEOUTS,
  MAX_TCP_TIMEOUT_SECONDS,
  TCP_TIMEOUT_STATES,
  type TcpTimeouts,
  assertClientTcpTimeouts,
  clientTcpTimeouts,
  tcpTimeoutPolicyText,
} from '../../../guest/firewall/client-tcp-timeouts.js';
import { anyProviderTcpTimeouts } from './arbitraries.js';

describe('clientTcpTimeouts', () => {
  it("shortens only TIME_WAIT (and CLOSE) of the kernel's defaults: what nft lists of the policy", () => {
    expect(DEFAULT_CLIENT_TCP_TIMEOUTS).toEqual({ ...KERNEL_TCP_TIMEOUTS, time_wait: 10 });
    expect(tcpTimeoutPolicyText(DEFAULT_CLIENT_TCP_TIMEOUTS)).toBe('time_wait : 10');
  });

  it("keeps the provider's timeouts but the closed states', which stay within what the flow limits assume", () => {
    fc.assert(
      fc.property(anyProviderTcpTimeouts, (provider) => {
        const client = clientTcpTimeouts(provider);
        expect(() => assertClientTcpTimeouts(client)).not.toThrow();
        expect(client.time_wait).toBe(Math.min(provider.time_wait, CLIENT_CLOSED_TIMEOUT_SECONDS));
        expect(client.close).toBe(Math.min(provider.close, CLIENT_CLOSED_TIMEOUT_SECONDS));
        expect(client.time_wait + client.close).toBeLessThanOrEqual(CLIENT_UNCOUNTED_SECONDS);
        for (const state of TCP_TIMEOUT_STATES.filter((name) => name !== 'time_wait' && name !== 'close')) {
          expect(client[state]).toBe(Math.min(provider[state], MAX_TCP_TIMEOUT_SECONDS));
        }
      }),
    );
  });

  it("refuses timeouts that are no whole seconds", () => {
    for (const wrong of [-1, 1.5, Number.NaN]) {
      expect(() => clientTcpTimeouts({ ...KERNEL_TCP_TIMEOUTS, established: wrong })).toThrow(expect.objectContaining({ kind: 'tcp-timeouts' }));
    }
  });
});

describe('tcpTimeoutPolicyText', () => {
  it('lists, as nft 1.0.6 does, the states that differ from the kernel default, in its order', () => {
    const policy: TcpTimeouts = { ...KERNEL_TCP_TIMEOUTS, established: 1000, time_wait: 10, close: 5, syn_sent2: 7, retrans: 200, unack: 200 };
    // Captured from `nft -n -s list table` of a policy made with these values.
    expect(tcpTimeoutPolicyText(policy)).toBe('established : 1000, time_wait : 10, close : 5, syn_sent2 : 7, retrans : 200, unack : 200');
    expect(tcpTimeoutPolicyText(KERNEL_TCP_TIMEOUTS)).toBe('');
  });

  it('names every state whose value differs, each once, and nothing else', () => {
    fc.assert(
      fc.property(anyProviderTcpTimeouts.map(clientTcpTimeouts), (policy) => {
        const listed = tcpTimeoutPolicyText(policy)
          .split(', ')
          .map((entry) => entry.split(' : '));
        expect(listed.map(([state]) => state)).toEqual(TCP_TIMEOUT_STATES.filter((state) => policy[state] !== KERNEL_TCP_TIMEOUTS[state]));
        for (const [state = '', value] of listed) expect(Number(value)).toBe(policy[state as keyof TcpTimeouts]);
      }),
    );
  });
});

describe('assertClientTcpTimeouts', () => {
  it('refuses closed states longer than 10 s and values the kernel cannot hold as given', () => {
    expect(() => assertClientTcpTimeouts(DEFAULT_CLIENT_TCP_TIMEOUTS)).not.toThrow();
    for (const wrong of [{ time_wait: 11 }, { close: 11 }, { established: MAX_TCP_TIMEOUT_SECONDS + 1 }, { unack: -1 }]) {
      expect(() => assertClientTcpTimeouts({ ...DEFAULT_CLIENT_TCP_TIMEOUTS, ...wrong })).toThrow(expect.objectContaining({ kind: 'tcp-timeouts' }));
    }
  });
});
