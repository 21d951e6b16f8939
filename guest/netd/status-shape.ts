// What `status` takes from the control socket, checked before it is shown or printed: whoever
// listens on that path may be no spectrum-netd (another service, a test double), and formatStatus
// would fail on a field of another type half-way through its table.
import type { ReaperStatus } from '../conntrack/conntrack-reaper.js';
import type { AgentStatus } from './agent.js';

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

/** What the agent answers `{"command":"status"}` with. */
export type StatusReply = AgentStatus & { readonly reaper?: ReaperStatus | null; readonly services?: ShownServices | null };

/** The first problem found in a value at `at`, or undefined. */
type Check = (value: unknown, at: string) => string | undefined;

function described(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

const typed =
  (what: string, test: (value: unknown) => boolean): Check =>
  (value, at) =>
    test(value) ? undefined : `${at} is ${described(value)}, not ${what}`;

const text = typed('a string', (value) => typeof value === 'string');
const count = typed('a number', (value) => typeof value === 'number' && Number.isFinite(value));
const flag = typed('true or false', (value) => typeof value === 'boolean');

const orNull =
  (check: Check): Check =>
  (value, at) =>
    value === null ? undefined : check(value, at);

/** Absent from the JSON (undefined there), or as `check` says. */
const optional =
  (check: Check): Check =>
  (value, at) =>
    value === undefined ? undefined : check(value, at);

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

const listOf =
  (check: Check): Check =>
  (value, at) => {
    if (!Array.isArray(value)) return `${at} is ${described(value)}, not a list`;
    for (const [index, item] of value.entries()) {
      const problem = check(item, `${at}[${index}]`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };

/** An object with these fields (others are let through: --json prints them). */
const fields =
  (shape: Readonly<Record<string, Check>>): Check =>
  (value, at) => {
    if (!isRecord(value)) return `${at} is ${described(value)}, not an object`;
    for (const [name, check] of Object.entries(shape)) {
      const problem = check(value[name], `${at}.${name}`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };

/** An object whose every field is as `check` says (counters). */
const recordOf =
  (check: Check): Check =>
  (value, at) => {
    if (!isRecord(value)) return `${at} is ${described(value)}, not an object`;
    for (const [name, item] of Object.entries(value)) {
      const problem = check(item, `${at}.${name}`);
      if (problem !== undefined) return problem;
    }
    return undefined;
  };

const link = fields({ name: text, role: text, id: orNull(count), ip: orNull(text), state: text, note: orNull(text), error: orNull(text) });

const lease = fields({ ifname: text, clientIp: text, state: text, hostname: optional(text), expires: optional(count) });

/** The DNS forwarder's counters `status` shows, in its order. */
export const SHOWN_DNS_COUNTS = ['queries', 'answered', 'retransmits', 'upstreamTimeouts', 'failed', 'rateLimited', 'overloaded', 'evicted', 'malformed'] as const;

const dns = fields({
  ...Object.fromEntries(SHOWN_DNS_COUNTS.map((name) => [name, optional(count)])),
  listening: optional(flag),
  lastBindError: optional(orNull(text)),
  upstreams: optional(listOf(text)),
  unreachableUpstreams: optional(listOf(text)),
});

const reaper = fields({
  threshold: orNull(count),
  thresholdOption: (value, at) => (value === 'auto' ? undefined : typed('"auto" or a number', (v) => typeof v === 'number')(value, at)),
  count: orNull(count),
  reaps: count,
  reaped: count,
  lastReap: orNull(fields({ deleted: count, countBefore: count, countAfter: count })),
  failures: count,
  lastError: orNull(text),
});

const status = fields({
  links: listOf(link),
  // initialChanges is null until the first reconcile is done.
  counters: recordOf(orNull(count)),
  firewall: orNull(recordOf(count)),
  flowLimits: orNull(fields({ clientFlowLimit: count, clientNewFlowRate: count })),
  firewallError: orNull(text),
  model: orNull(fields({})),
  conntrack: orNull(fields({ owed: listOf(text), sweepOwed: flag, lastError: orNull(text) })),
  reaper: optional(orNull(reaper)),
  services: optional(orNull(fields({ leases: optional(listOf(lease)), dhcp: optional(orNull(recordOf(count))), dns: optional(orNull(dns)) }))),
});

/**
 * `value` as a status that formatStatus can show (and --json print as one), or why it is none:
 * the first field found wrong, and what it is.
 */
export function readStatusReply(value: unknown): { readonly status: StatusReply } | { readonly problem: string } {
  const problem = status(value, 'status');
  // Every field StatusReply types (and formatStatus reads) was checked just now.
  return problem === undefined ? { status: value as StatusReply } : { problem };
}
