import { Command } from 'commander';
import { directoryOption } from '../shared/cli/directory-option.js';
import { optionSource, usablePath } from '../shared/cli/option-source.js';
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { refuseRepeatedValues } from '../shared/cli/single-value.js';
import { CONFIG_DIR_ENV, type ConfigProblem, checkVm, configDirFrom } from './config.js';
import { type ConfigDirSource, readConfigVms } from './config-reader.js';
import { isVmName, vmName } from './vm-name.js';

/** The result of checking one VM: the JSON contract of `check --json`. */
export interface CheckReport {
  readonly vm: string;
  readonly configDir: string;
  readonly valid: boolean;
  readonly providers: readonly string[];
  readonly problems: readonly ConfigProblem[];
}

export function formatCheckJson(report: CheckReport): string {
  const { vm, configDir, valid, providers, problems } = report;
  return `${JSON.stringify({ vm, configDir, valid, providers, problems: problems.map(({ vm: of, kind, message }) => ({ vm: of, kind, message })) })}\n`;
}

export function formatCheckText(report: CheckReport): string {
  const providers = report.providers.length === 0 ? 'no network providers' : `providers: ${report.providers.join(', ')}`;
  return `${report.vm}: ok (${providers}; config dir ${report.configDir})\n`;
}

/**
 * Check one VM directory (and its provider chain) and report. Only reads the file system.
 * `source`: where configDir came from, for the message of one that cannot be read.
 */
export async function checkReport(configDir: string, name: string, source?: ConfigDirSource): Promise<CheckReport> {
  const vm = vmName(name);
  const snapshot = await readConfigVms(configDir, [vm], source);
  const problems = checkVm(snapshot, vm);
  const dir = snapshot.vms.get(vm);
  const providers =
    dir?.location === 'directory' && dir.providers.state === 'directory' ? dir.providers.entries.map((e) => e.name).filter(isVmName).sort() : [];
  return { vm, configDir: snapshot.dir, valid: problems.length === 0, providers, problems };
}

/** `check <vm>`: exit 0 when valid, 1 listing every problem, 2 for a bad name or usage. */
export function checkCommand(env: Readonly<Record<string, string | undefined>> = process.env): Command {
  const check = new Command('check')
    .description('check a VM directory against the spec: vmlinux, blk/*.img and providers (followed through provider chains)')
    .argument('<vm>', 'VM name: a directory of the config dir')
    .option('--config-dir <dir>', `directory of VM directories (default: $SPECTRUM_CONFIG_DIR or ${configDirFrom(undefined, {})})`, directoryOption('--config-dir'))
    .option('--json', 'print one JSON object: {vm, configDir, valid, providers, problems: [{vm, kind, message}]}')
    .action(async (name: string, options: { configDir?: string; json?: boolean }) => {
      // A relative dir needs the working directory: one deleted would have every VM look missing.
      const source = optionSource('--config-dir', options.configDir !== undefined, CONFIG_DIR_ENV, env);
      const configDir = usablePath(configDirFrom(options.configDir, env), source);
      const report = await checkReport(configDir, name, source);
      if (options.json === true) process.stdout.write(formatCheckJson(report));
      else if (report.valid) process.stdout.write(formatCheckText(report));
      if (!report.valid) {
        const count = report.problems.length;
        throw new CliError(
          `check: ${report.vm} is not a valid VM (${count} problem${count === 1 ? '' : 's'})${options.json === true ? '' : ':'}`,
          EXIT.failure,
          options.json === true ? [] : report.problems.map((p) => p.message),
          'details',
          false,
          // Its object says it (`"valid": false`): no error object besides.
          { saidInJson: options.json === true },
        );
      }
    });
  // Two different --config-dir values are refused, as link's are (one directory twice is not).
  return refuseRepeatedValues(check, [], ['--config-dir']);
}
