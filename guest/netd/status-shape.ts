// What `status` takes from the control socket, checked before it is shown or printed: whoever
// listens on that path may be no spectrum-netd (another service, a test double), and formatStatus
// would fail on a field of another type half-way through its table. Loaded only once an answer is
// there to check (zod costs ~35 ms of start-up): see agentStatus in commands.ts.
import { z } from 'zod';
import { quoteText } from '../../shared/shown-text.js';
import type { ReaperStatus } from '../conntrack/conntrack-reaper.js';
import type { AgentStatus } from './agent.js';
import { SHOWN_DNS_COUNTS } from './shown-dns-counts.js';

/** The parts of a DHCP lease `status` shows (a real one has more: --json prints them all). */
export interface ShownLease {
  readonly ifname: string;
  readonly clientIp: string;
  readonly state: string;
  readonly hostname?: string;
  readonly expires?: number;
}

/** The services' part of a status, as formatStatus reads it. */
export interface ShownServices {
  readonly leases?: readonly ShownLease[];
  readonly dhcp?: Readonly<Record<string, number>> | null;
  /** The DNS forwarder's counters, its upstreams and whether it listens. */
  readonly dns?: Readonly<Record<string, unknown>> | null;
}

/**
 * What the agent answers `{"command":"status"}` with. `arpGuard` and `firewallEnabled` may be
 * absent: an agent started before an upgrade (and `status` run after it) does not send them.
 */
export type StatusReply = Omit<AgentStatus, 'arpGuard' | 'firewallEnabled'> & {
  readonly arpGuard?: AgentStatus['arpGuard'];
  readonly firewallEnabled?: AgentStatus['firewallEnabled'];
  readonly reaper?: ReaperStatus | null;
  readonly services?: ShownServices | null;
};

// Objects let other fields through (--json prints them); only what formatStatus reads is checked.
const link = z.object({
  name: z.string(),
  role: z.string(),
  id: z.number().nullable(),
  ip: z.string().nullable(),
  state: z.string(),
  note: z.string().nullable(),
  error: z.string().nullable(),
});

const lease = z.object({ ifname: z.string(), clientIp: z.string(), state: z.string(), hostname: z.string().optional(), expires: z.number().optional() });

const dns = z.object({
  ...Object.fromEntries(SHOWN_DNS_COUNTS.map((name) => [name, z.number().optional()])),
  listening: z.boolean().optional(),
  lastBindError: z.string().nullable().optional(),
  upstreams: z.array(z.string()).optional(),
  unreachableUpstreams: z.array(z.string()).optional(),
  failingUpstreams: z.array(z.string()).optional(),
});

const reaper = z.object({
  threshold: z.number().nullable(),
  thresholdOption: z.union([z.literal('auto'), z.number()], { error: 'Invalid input: expected "auto" or a number' }),
  count: z.number().nullable(),
  reaps: z.number(),
  reaped: z.number(),
  lastReap: z.object({ deleted: z.number(), countBefore: z.number(), countAfter: z.number() }).nullable(),
  failures: z.number(),
  lastError: z.string().nullable(),
});

const status = z.object({
  links: z.array(link).readonly(),
  // initialChanges is null until the first reconcile is done.
  counters: z.record(z.string(), z.number().nullable()),
  // false: run with --no-firewall (firewall then null).
  firewallEnabled: z.boolean().optional(),
  // A counter is null where its table is not in force (arpDrops without the ARP guard).
  firewall: z.record(z.string(), z.number().nullable()).nullable(),
  arpGuard: z.enum(['in-force', 'missing', 'unsupported']).nullable().optional(),
  flowLimits: z.object({ clientFlowLimit: z.number(), clientNewFlowRate: z.number() }).nullable(),
  firewallError: z.string().nullable(),
  model: z.object({}).nullable(),
  conntrack: z.object({ owed: z.array(z.string()).readonly(), sweepOwed: z.boolean(), lastError: z.string().nullable() }).nullable(),
  reaper: reaper.nullable().optional(),
  services: z.object({ leases: z.array(lease).readonly().optional(), dhcp: z.record(z.string(), z.number()).nullable().optional(), dns: dns.nullable().optional() }).nullable().optional(),
});

/** Where in the answer a problem is, as `status.links[0].role`: keys the peer chose are quoted. */
function shownPath(path: readonly PropertyKey[]): string {
  return path
    .map((key) => {
      if (typeof key === 'number') return `[${key}]`;
      const name = String(key);
      return /^[A-Za-z_$][\w$]*$/.test(name) ? `.${name}` : `[${quoteText(name, 40)}]`;
    })
    .join('');
}

/**
 * `value` as a status that formatStatus can show (and --json print as one), or why it is none:
 * the first field found wrong, and what was expected there.
 */
export function readStatusReply(value: unknown): { readonly status: StatusReply } | { readonly problem: string } {
  const checked = status.safeParse(value);
  if (checked.success) {
    // Every field StatusReply types (and formatStatus reads) was checked just now; the value itself
    // is kept (not checked.data) so that --json prints the fields not checked, in the agent's order.
    return { status: value as StatusReply };
  }
  const [first] = checked.error.issues;
  // zod's messages name types and expected values, never the peer's text.
  return { problem: first === undefined ? 'status is invalid' : `status${shownPath(first.path)}: ${first.message}` };
}

// Every status the agent can send is one the schema takes (checked by tsc, not at run time); but
// the counters', the model's and the services' types are interfaces, or hold unknown values, which
// no record type takes (the tests check those parts).
type Typed<T> = Omit<T, 'counters' | 'firewall' | 'model' | 'services'>;
const _everyReplyFits = (reply: Typed<StatusReply>): Typed<z.input<typeof status>> => reply;
