import { QmpError } from '../../../host/vmm/qmp.js';

/** The QmpError a promise rejects with; anything else (or no rejection) fails the test. */
export async function qmpError(promise: Promise<unknown>): Promise<QmpError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof QmpError) return error;
    throw error;
  }
  throw new Error('expected a QmpError');
}
