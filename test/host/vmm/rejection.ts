import { CloudHypervisorError } from '../../../host/vmm/cloud-hypervisor.js';
import { QmpError } from '../../../host/vmm/qmp.js';

/** The error of class `kind` a promise rejects with; anything else (or no rejection) fails the test. */
export async function rejectionOf<E extends Error>(promise: Promise<unknown>, kind: new (...args: never[]) => E): Promise<E> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof kind) return error;
    throw error;
  }
  throw new Error(`expected a ${kind.name}`);
}

export const qmpError = (promise: Promise<unknown>): Promise<QmpError> => rejectionOf(promise, QmpError);
export const chError = (promise: Promise<unknown>): Promise<CloudHypervisorError> => rejectionOf(promise, CloudHypervisorError);
