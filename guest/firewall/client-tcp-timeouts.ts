/**
 * The conntrack timeouts of clients' TCP flows (an nft `ct timeout` policy), pure: the provider's
 * own timeouts with the two closed states, which the flow cap does not count, shortened.
 *
 * Why: connlimit (`ct count`) leaves out TCP entries in TIME_WAIT and CLOSE (nf_conncount's
 * already_closed()), which the kernel keeps 120 s and 10 s. A client opening and closing
 * connections at its new-flow rate R would hold R x 130 s entries the cap never sees (13,000 at
 * 100/s), more than the whole table of a VM with up to 1 GB (8 entries per MB). With TIME_WAIT
 * cut to 10 s it holds at most R x 20 s of them (CLIENT_UNCOUNTED_SECONDS), as long as it sends
 * nothing more on them: each in-window packet restarts the timeout of the entry's state, TIME_WAIT's
 * too (README, Known limitations).
 *
 * Why 10 s of TIME_WAIT is enough in conntrack: the client's TCP keeps its own TIME_WAIT; a FIN
 * retransmitted after the entry went is INVALID (conntrack opens no flow on a FIN) and dropped,
 * or, from the server, reaches the provider's address unmasqueraded: either way the client, done
 * with the connection, does not notice. A new SYN on the same ports opens a new flow, as it
 * would have from TIME_WAIT.
 */
import { FirewallError } from './firewall-error.js';

/** The TCP states a ct timeout policy gives a timeout, in the order nft (1.0.6) lists them. */
export const TCP_TIMEOUT_STATES = [
  'syn_sent',
  'syn_recv',
  'established',
  'fin_wait',
  'close_wait',
  'last_ack',
  'time_wait',
  'close',
  'syn_sent2',
  'retrans',
  'unack',
] as const;

export type TcpTimeoutState = (typeof TCP_TIMEOUT_STATES)[number];

/** Seconds per state. */
export type TcpTimeouts = Readonly<Record<TcpTimeoutState, number>>;

/**
 * The kernel's default TCP timeouts. nft (1.0.6) sends these for every state a policy leaves out,
 * whatever the provider's sysctls say, and lists only the states whose value differs from them.
 */
export const KERNEL_TCP_TIMEOUTS: TcpTimeouts = {
  syn_sent: 120,
  syn_recv: 60,
  established: 432_000,
  fin_wait: 120,
  close_wait: 60,
  last_ack: 30,
  time_wait: 120,
  close: 10,
  syn_sent2: 120,
  retrans: 300,
  unack: 300,
};

/** The most TIME_WAIT and CLOSE each last for a client's TCP flow. */
export const CLIENT_CLOSED_TIMEOUT_SECONDS = 10;

/**
 * The longest a client's TCP entry stays in the table uncounted by the cap: TIME_WAIT, then
 * CLOSE (a RST in TIME_WAIT moves it there), each at most CLIENT_CLOSED_TIMEOUT_SECONDS.
 */
export const CLIENT_UNCOUNTED_SECONDS = 2 * CLIENT_CLOSED_TIMEOUT_SECONDS;

/**
 * The most seconds a policy takes: the kernel keeps a timeout in jiffies in 32 bits, and a larger
 * value would be listed as another (the audit would replace the table forever). INT_MAX / 1000,
 * which holds for any HZ up to 1000 (what a sysctl holds at HZ 1000 at most: 24 days).
 */
export const MAX_TCP_TIMEOUT_SECONDS = 2_147_483;

/**
 * The sysctl under /proc/sys/net/netfilter each state's default comes from; syn_sent2 has none
 * (the kernel's default holds).
 */
export const TCP_TIMEOUT_SYSCTLS: Readonly<Partial<Record<TcpTimeoutState, string>>> = {
  syn_sent: 'nf_conntrack_tcp_timeout_syn_sent',
  syn_recv: 'nf_conntrack_tcp_timeout_syn_recv',
  established: 'nf_conntrack_tcp_timeout_established',
  fin_wait: 'nf_conntrack_tcp_timeout_fin_wait',
  close_wait: 'nf_conntrack_tcp_timeout_close_wait',
  last_ack: 'nf_conntrack_tcp_timeout_last_ack',
  time_wait: 'nf_conntrack_tcp_timeout_time_wait',
  close: 'nf_conntrack_tcp_timeout_close',
  retrans: 'nf_conntrack_tcp_timeout_max_retrans',
  unack: 'nf_conntrack_tcp_timeout_unacknowledged',
};

/**
 * The timeouts of a client's TCP flows given the provider's (its sysctls): the same, but
 * TIME_WAIT and CLOSE at most CLIENT_CLOSED_TIMEOUT_SECONDS, and none past
 * MAX_TCP_TIMEOUT_SECONDS. The same as the provider's otherwise, so a provider that shortened its
 * established timeout (say) has its clients' flows follow: a policy holds every state, and nft
 * fills those it is not given with the kernel's defaults, not the sysctls.
 */
export function clientTcpTimeouts(provider: TcpTimeouts): TcpTimeouts {
  assertTcpTimeouts(provider, Number.MAX_SAFE_INTEGER);
  const clamped = Object.fromEntries(TCP_TIMEOUT_STATES.map((state) => [state, Math.min(provider[state], MAX_TCP_TIMEOUT_SECONDS)])) as Record<TcpTimeoutState, number>;
  return {
    ...clamped,
    time_wait: Math.min(clamped.time_wait, CLIENT_CLOSED_TIMEOUT_SECONDS),
    close: Math.min(clamped.close, CLIENT_CLOSED_TIMEOUT_SECONDS),
  };
}

/** Whether two policies give every state the same timeout. */
export function sameTcpTimeouts(a: TcpTimeouts, b: TcpTimeouts): boolean {
  return TCP_TIMEOUT_STATES.every((state) => a[state] === b[state]);
}

/** The policy of a provider with the kernel's defaults: TIME_WAIT 10 s, the rest as the kernel's. */
export const DEFAULT_CLIENT_TCP_TIMEOUTS: TcpTimeouts = clientTcpTimeouts(KERNEL_TCP_TIMEOUTS);

/**
 * A policy as `nft list` prints it: the states whose value differs from the kernel's default,
 * in TCP_TIMEOUT_STATES order (`time_wait : 10`). Never empty for a client policy: its
 * TIME_WAIT is never the default.
 */
export function tcpTimeoutPolicyText(timeouts: TcpTimeouts): string {
  return TCP_TIMEOUT_STATES.filter((state) => timeouts[state] !== KERNEL_TCP_TIMEOUTS[state])
    .map((state) => `${state} : ${timeouts[state]}`)
    .join(', ');
}

/**
 * Refuse a policy the table cannot hold as given, or one that leaves a client's closed flows
 * longer than the flow limits assume.
 */
export function assertClientTcpTimeouts(timeouts: TcpTimeouts): void {
  assertTcpTimeouts(timeouts, MAX_TCP_TIMEOUT_SECONDS);
  for (const state of ['time_wait', 'close'] as const) {
    if (timeouts[state] > CLIENT_CLOSED_TIMEOUT_SECONDS) {
      throw new FirewallError('tcp-timeouts', `a client's TCP ${state} timeout of ${timeouts[state]} s is longer than the ${CLIENT_CLOSED_TIMEOUT_SECONDS} s the flow limits assume`);
    }
  }
}

function assertTcpTimeouts(timeouts: TcpTimeouts, max: number): void {
  for (const state of TCP_TIMEOUT_STATES) {
    const value = timeouts[state];
    if (!Number.isSafeInteger(value) || value < 0 || value > max) {
      throw new FirewallError('tcp-timeouts', `TCP ${state} timeout ${String(value)} is not a whole number of seconds from 0 to ${max}`);
    }
  }
}
