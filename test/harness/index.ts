/**
 * Network-namespace test harness: the one import for test files. See netns.ts for how commands
 * enter namespaces (and why processes that create namespaces need `enter: 'nsenter'`).
 */
export {
  CommandError,
  Netns,
  NetnsProcess,
  createHarness,
  writeResolvConf,
  type EnterMode,
  type ExecOptions,
  type ExecResult,
  type Harness,
  type ProcessExit,
  type SpawnOptions,
} from './netns.js';
export {
  HarnessError,
  MAX_INTERFACE_NAME_BYTES,
  RUN_PREFIX_ENV,
  TEST_IPV4_RANGES,
  assertInterfaceName,
  assertOwnedNamespace,
  assertTestCidr,
  runPrefix,
} from './names.js';
export { descendantsOf, isRunning, processIdentity, type ProcessIdentity } from './proc.js';
export { removeNamespaceSync, reportSignalCleanup, trackNamespacePrefix, trackTempDir, useOwnTempDir } from './process-registry.js';
export { eventually } from './eventually.js';
export { netnsSupport, type NetnsSupport } from './support.js';
export { describeNetns, netnsSuiteMode, type NetnsSuiteMode } from './describe-netns.js';
export { collectOutput, type Ended } from './child-output.js';
export { jsonErrorOf, printedChecked, splitJsonError, type JsonError } from './json-error.js';
