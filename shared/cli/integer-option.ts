import { CliError, EXIT } from './run-cli.js';

/**
 * A whole-number option as typed: decimal digits only, from min to max. Number() alone would
 * also take hex, exponents, blanks and the empty string (as 0).
 */
export function integerOption(flag: string, text: string, min: number, max: number, unit: string): number {
  const value = /^[0-9]{1,15}$/.test(text) ? Number(text) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new CliError(`${flag} ${JSON.stringify(text)} is not valid: give ${unit} from ${String(min)} to ${String(max)}`, EXIT.usage);
  }
  return value;
}
