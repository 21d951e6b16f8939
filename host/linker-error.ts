// LinkerError, the one error type of the linker's modules, and its kinds; what makes a signal one
// (stopIfInterrupted at a run's safe points, underStateLock while a run waits for the state lock),
// and reasonOf, by which every line says a failure's reason in one line. Apart, just above the
// vocabulary (linker-types.ts), as every other module of the linker throws these or tells them
// apart.
import type { AllVms, FailedVm, FinishedOutcome, KeepGoingStop, LinkReport, LinkerOptions, LockWaitOptions, StoppedRelease } from './linker-types.js';
import { type LockOptions, StateStoreError, withStateLock } from './state-store.js';
import type { VmName } from './vm-name.js';

export class LinkerError extends Error {
  override readonly name = 'LinkerError';
  constructor(
    readonly kind:
      | 'not-linked'
      /**
       * `link` took down no link to a provider dropped from the config: that failed, or the state
       * could not be written first; or the kernel stopped it part-way (`released` says what it had done).
       */
      | 'unlisted-not-taken-down'
      /** `unlink` took nothing down, or `link` took no NIC out for another mode: the state file could not be written (read-only, full, no permission). */
      | 'state-not-writable'
      /** Links were taken down (NICs detached, devices deleted), and then the state file could not record it. */
      | 'taken-down-not-recorded'
      /**
       * `unlink` stopped part-way through its take-down (the kernel refused a lookup or a deletion
       * of their devices), after NICs came out of their VMMs, VMMs did not detach or devices went
       * (`released`); the state file is as it was. (releaseLinks throws it too, to its callers.)
       */
      | 'take-down-stopped'
      /**
       * `unlink` took nothing down (no NIC detached, no device deleted): the kernel refused a listing
       * or a lookup of its links' devices first; `failure` is the DeviceError.
       */
      | 'take-down-refused'
      /**
       * `link` failed only after its links were made, taking down links to providers dropped, with
       * an error of no LinkerError (`failure`, as thrown: another module's, or a bug), to be said
       * as it is (its exit code too) after what the run did (`outcome`), as a LinkerError there is.
       */
      | 'take-down-failed'
      /**
       * `gc` of a state dir with no state file where devices named as links with the prefix
       * exist: every one would look unowned, those of live links too (a --state-dir mistyped):
       * refused, nothing deleted (bad input, as 'unrecorded-devices'). With none, nothing to collect.
       */
      | 'no-state'
      /** `gc` stopped by the kernel (its listing of devices, or a lookup or deletion of its removal refused); `failure` is the DeviceError. */
      | 'gc-stopped'
      /**
       * The state file records another device prefix for its links than the run's (given by
       * option or variable): bad input, refused before anything is done (state-prefix.ts).
       */
      | 'device-prefix-mismatch'
      /**
       * The state file records another netns prefix for its links up in netns mode than a `link`
       * run's: bad input, refused before anything is done (state-prefix.ts).
       */
      | 'netns-prefix-mismatch'
      /**
       * `link` would add VM namespaces (netns mode) in a mount namespace of its own (under `ip netns
       * exec`), where they would not outlive it: refused before anything is made (netns-lasting.ts).
       */
      | 'netns-not-lasting'
      /**
       * `link` into a state that claims no device prefix (no links, no prefix recorded) while
       * devices named as links with the run's exist: refused before anything is made (bad input);
       * `gc` of such a state, where it would delete any: refused, nothing deleted.
       */
      | 'unrecorded-devices'
      | 'unknown-vm'
      | 'vmm-detach-failed'
      /**
       * `link` took no NIC out and made nothing: a side kept in its VMM mode whose socket moved
       * has a VMM running at the socket recorded, and none to be reached at the new one.
       */
      | 'vmm-socket-moved'
      /**
       * `link` took no NIC out and made nothing: a side kept in its VMM mode would move from the
       * socket recorded to a path the state cannot record (longer than a Unix socket path once made
       * absolute, or with a control character, '"' or '\'): bad input, as a socket path too long is.
       */
      | 'vmm-socket-unrecordable'
      | 'interrupted'
      /** A signal came while the run waited for the state lock: nothing was done. */
      | 'interrupted-waiting'
      /**
       * A signal came while a failed `link` was undone (the undo went on): `failure` is what failed
       * first; or, where a bug cut that undo short, that bug (`stopped.cutShort` says so).
       */
      | 'interrupted-undoing'
      /**
       * `link --keep-going` stopped by a state file that could not be read or written (`failure`,
       * the StateStoreError, or the LinkerError of a state dir found not writable before a take-out
       * or take-down, or of a take-down not recorded: whose message this is), or by a bug in its
       * passes (`failure`, an error of no kind, said as a bug), after VMs of it had failed (`failed`).
       */
      | 'state-failed',
    message: string,
    /**
     * For 'interrupted-undoing': the failure the run was undone for, as thrown; for 'state-failed',
     * the state failure (see there); for 'state-not-writable', 'unlisted-not-taken-down' and
     * 'taken-down-not-recorded' where the state dir could not be written, the StateStoreError; for
     * another 'unlisted-not-taken-down', what stopped it (a bug's, `link` says as a bug's).
     */
    readonly failure?: unknown,
    /**
     * For 'interrupted', 'state-failed' and 'unlisted-not-taken-down' of `link --keep-going`: the
     * VMs that had failed before the signal, the state failure or the failed take-down of links to
     * providers dropped stopped the run (each alone, nothing made for it or undone), in the order
     * asked for, to be said too; for 'state-failed' and 'interrupted-waiting' where the state lock
     * was not taken, with no state dir yet: those that failed their checks before it.
     */
    readonly failed: readonly FailedVm[] = [],
    /**
     * For 'state-failed' of `link --keep-going`: the VMs it had linked again one by one (after its
     * one transaction failed) before the state failure stopped it (a bug, also those whose NICs it
     * had hot-plugged VM by VM after it); where the take-down of links to
     * providers dropped failed after the run's links were made (`outcome`), every VM it linked. In
     * the order asked for, each with its links: linked and recorded, to be printed as where the run
     * ends unstopped.
     */
    readonly linked: ReadonlyMap<VmName, readonly LinkReport[]> = new Map(),
    /**
     * Where `link` failed only after its links were made, taking down the links to providers
     * dropped ('unlisted-not-taken-down', 'taken-down-not-recorded', and with --keep-going a
     * 'state-failed' of either): what the run did, to be said as where it ends well (finishRun).
     */
    readonly outcome?: FinishedOutcome,
    /**
     * For 'take-down-stopped', and a 'vmm-detach-failed' of `unlink` whose VMM refused after other
     * NICs had come out, or an 'unlisted-not-taken-down' stopped part-way: what that take-down had
     * done (StoppedRelease).
     */
    readonly released?: StoppedRelease,
    /**
     * For 'state-failed' of `link --all --keep-going` (the config dir read whole): its VMs and that
     * dir as read (`all`), and what it leaves as it is there, as where it ends well (`orphaned` and
     * `unusable` as the state read tells them; none where it could not be read), to be said.
     */
    readonly leftAsItIs?: Pick<FinishedOutcome, 'orphaned' | 'unusable'> & { readonly all: AllVms },
    /**
     * For 'state-failed' of `link --keep-going` that stopped it in its passes: what else they have
     * to say (KeepGoingStop); for 'interrupted-undoing' where a bug cut the undo short, `cutShort`.
     */
    readonly stopped: KeepGoingStop = {},
  ) {
    super(message);
  }
}

/** Throw where the run was asked to stop (options.signal aborted), for the failure path to undo it. */
export function stopIfInterrupted(options: Pick<LinkerOptions, 'signal'>): void {
  const { signal } = options;
  if (signal?.aborted === true) throw new LinkerError('interrupted', `interrupted (${String(signal.reason)}): what this run had made is undone`);
}

/** The state lock's options of a run: its wait, and where its state dir came from. */
function lockOptions(options: Pick<LinkerOptions, 'stateDirSource' | 'lockWaitMs' | 'onLockWait' | 'signal' | 'onUnlockFailed'>): LockOptions {
  const { stateDirSource: source, lockWaitMs: timeoutMs, onLockWait: onWaiting, signal, onUnlockFailed } = options;
  return {
    ...(source === undefined ? {} : { source }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(onWaiting === undefined ? {} : { onWaiting }),
    ...(signal === undefined ? {} : { signal }),
    ...(onUnlockFailed === undefined ? {} : { onUnlockFailed }),
  };
}

/**
 * Run fn under the state lock, telling onLockHeld first; an interruption (options.signal) while
 * waiting for it fails with kind 'interrupted-waiting', its message ending with `nothing`.
 */
export function underStateLock<T>(options: LockWaitOptions, nothing: string, fn: () => Promise<T>): Promise<T> {
  const held = (): Promise<T> => {
    options.onLockHeld?.();
    return fn();
  };
  return withStateLock(options.stateDir, held, lockOptions(options)).catch((error: unknown) => {
    // Interrupted while another run holds the lock: stop waiting (nothing done yet).
    if (error instanceof StateStoreError && error.kind === 'lock-aborted') {
      throw new LinkerError('interrupted-waiting', `interrupted (${String(options.signal?.reason)}) while waiting for the state lock: ${nothing}`);
    }
    throw error;
  });
}

export const isInterruption = (error: unknown): error is LinkerError => error instanceof LinkerError && error.kind === 'interrupted';

export const reasonOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));
