import { randomBytes } from 'node:crypto';

/** Any misuse of the harness, or a refusal to touch something it does not own. */
export class HarnessError extends Error {
  override readonly name = 'HarnessError';
}

/** Environment variable carrying the run prefix from the global setup to workers and fixtures. */
export const RUN_PREFIX_ENV = 'SPECTRUM_TEST_PREFIX';

/**
 * A run prefix is letters/digits ending in '-', so one run's prefix can never be a prefix of
 * another's name by accident and an empty prefix (which would match every namespace) is impossible.
 */
const RUN_PREFIX_PATTERN = /^[a-z][a-z0-9]{2,15}-$/;

/** Namespace names end up as file names under /run/netns and /etc/netns: keep them plain. */
const NAMESPACE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,95}$/;

/** Linux IFNAMSIZ is 16 including the terminating NUL. */
export const MAX_INTERFACE_NAME_BYTES = 15;

export function newRunPrefix(): string {
  return `snt${randomBytes(3).toString('hex')}-`;
}

export function checkRunPrefix(prefix: string): string {
  if (!RUN_PREFIX_PATTERN.test(prefix)) {
    throw new HarnessError(
      `${RUN_PREFIX_ENV}=${JSON.stringify(prefix)} is not a valid run prefix: ` +
        `expected a lowercase letter, 2-15 lowercase letters/digits, then '-' (e.g. snt1a2b3c-)`,
    );
  }
  return prefix;
}

/** The prefix of this test run; every namespace the harness touches must start with it. */
export function runPrefix(): string {
  const prefix = process.env[RUN_PREFIX_ENV];
  if (prefix === undefined || prefix === '') {
    throw new HarnessError(
      `${RUN_PREFIX_ENV} is not set: run tests through vitest (test/harness/global-setup.ts sets it) ` +
        `or export it yourself (e.g. ${RUN_PREFIX_ENV}=snt1a2b3c-)`,
    );
  }
  return checkRunPrefix(prefix);
}

/** The one gate every namespace operation passes: refuse names this run did not create. */
export function assertOwnedNamespace(name: string): void {
  const prefix = runPrefix();
  if (!name.startsWith(prefix) || name.length === prefix.length) {
    throw new HarnessError(
      `refusing to operate on network namespace ${JSON.stringify(name)}: ` +
        `it does not carry this run's prefix ${JSON.stringify(prefix)}`,
    );
  }
  if (!NAMESPACE_NAME_PATTERN.test(name)) {
    throw new HarnessError(`invalid network namespace name ${JSON.stringify(name)}`);
  }
}

/** Same rules as the kernel's dev_valid_name(), so the error comes from us, with a reason. */
export function assertInterfaceName(name: string): void {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes === 0) throw new HarnessError('interface name is empty');
  if (bytes > MAX_INTERFACE_NAME_BYTES) {
    throw new HarnessError(
      `interface name ${JSON.stringify(name)} is ${bytes} bytes; Linux allows at most ${MAX_INTERFACE_NAME_BYTES}`,
    );
  }
  if (name === '.' || name === '..' || /[\s/:]/.test(name)) {
    throw new HarnessError(
      `interface name ${JSON.stringify(name)} is invalid: no whitespace, '/' or ':', not '.' or '..'`,
    );
  }
}

/** Ranges tests may use: shared address space, link-local and the three documentation nets. */
export const TEST_IPV4_RANGES: readonly string[] = [
  '100.64.0.0/16',
  '169.254.0.0/16',
  '192.0.2.0/24',
  '198.51.100.0/24',
  '203.0.113.0/24',
];

function parseIpv4Cidr(cidr: string): { address: number; length: number } | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (match === null) return undefined;
  const octets = match.slice(1, 5).map(Number);
  const length = Number(match[5]);
  if (octets.some((octet) => octet > 255) || length > 32) return undefined;
  const address = octets.reduce((acc, octet) => acc * 256 + octet, 0);
  return { address, length };
}

function networkOf(address: number, length: number): number {
  // Plain arithmetic instead of bit operators: JS bitwise results are signed 32-bit.
  const size = 2 ** (32 - length);
  return Math.floor(address / size) * size;
}

/**
 * Accept an IPv4 address/prefix only if the whole prefix lies in one of TEST_IPV4_RANGES, so a
 * test can never configure (or route) a real network even inside its namespace.
 */
export function assertTestCidr(cidr: string): void {
  const parsed = parseIpv4Cidr(cidr);
  if (parsed === undefined) {
    throw new HarnessError(`${JSON.stringify(cidr)} is not an IPv4 address/prefix like 100.64.0.1/24`);
  }
  const inRange = TEST_IPV4_RANGES.some((range) => {
    const parsedRange = parseIpv4Cidr(range);
    return (
      parsedRange !== undefined &&
      parsed.length >= parsedRange.length &&
      networkOf(parsed.address, parsedRange.length) === parsedRange.address
    );
  });
  if (!inRange) {
    throw new HarnessError(
      `${cidr} is outside the test address ranges (${TEST_IPV4_RANGES.join(', ')}) or its prefix is wider than the range`,
    );
  }
}
