/** Read-only views of /proc, for tests that must prove processes are gone. */
import { readdirSync, readFileSync } from 'node:fs';

/** A PID plus its start time, so a recycled PID is never mistaken for the original process. */
export interface ProcessIdentity {
  readonly pid: number;
  readonly startTime: string;
}

interface ProcStat {
  readonly state: string;
  readonly ppid: number;
  readonly pgrp: number;
  readonly startTime: string;
}

function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and ')': fields resume after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const ppid = fields[1];
  const pgrp = fields[2];
  const startTime = fields[19];
  if (state === undefined || ppid === undefined || pgrp === undefined || startTime === undefined) return undefined;
  return { state, ppid: Number(ppid), pgrp: Number(pgrp), startTime };
}

export function processIdentity(pid: number): ProcessIdentity | undefined {
  const stat = readStat(pid);
  return stat === undefined ? undefined : { pid, startTime: stat.startTime };
}

/** True while the very process (not a PID reuse) exists and is not a zombie. */
export function isRunning(identity: ProcessIdentity): boolean {
  const stat = readStat(identity.pid);
  return stat !== undefined && stat.startTime === identity.startTime && stat.state !== 'Z' && stat.state !== 'X';
}

function livePids(): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number);
}

/**
 * Whether any non-zombie process is in process group `pgid`. Zombies are ignored: orphans are
 * reaped by PID 1, which on some machines takes over a second, but they no longer run.
 */
export function groupHasLiveMembers(pgid: number): boolean {
  return livePids().some((pid) => {
    const stat = readStat(pid);
    return stat !== undefined && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X';
  });
}

/** Every live descendant of `pid` (children, grandchildren, ...), by scanning /proc. */
export function descendantsOf(pid: number): ProcessIdentity[] {
  const childrenByParent = new Map<number, number[]>();
  const startTimes = new Map<number, string>();
  for (const childPid of livePids()) {
    const stat = readStat(childPid);
    if (stat === undefined || stat.state === 'Z') continue;
    startTimes.set(childPid, stat.startTime);
    const siblings = childrenByParent.get(stat.ppid) ?? [];
    siblings.push(childPid);
    childrenByParent.set(stat.ppid, siblings);
  }
  const found: ProcessIdentity[] = [];
  const pending = [pid];
  for (let parent = pending.pop(); parent !== undefined; parent = pending.pop()) {
    for (const child of childrenByParent.get(parent) ?? []) {
      const startTime = startTimes.get(child);
      if (startTime !== undefined) found.push({ pid: child, startTime });
      pending.push(child);
    }
  }
  return found;
}
