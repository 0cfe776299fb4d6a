import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/**
 * CPU time the whole machine spent busy (every process: servers, Postgres, Redis, the load
 * generator), from the first line of /proc/stat. Per request it is steadier than requests/s on a
 * shared VM, where another tenant's load moves throughput more than it moves the work done.
 */

let ticksPerSecond: number | undefined;

/** Seconds the machine's CPUs have been busy since boot, summed over cores. */
export function machineBusySeconds(): number {
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice", in clock ticks; guest
  // time is already inside user and nice, so only the first eight count.
  const fields = readFileSync('/proc/stat', 'utf8').slice(0, 200).split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length !== 8 || fields.some((n) => !Number.isFinite(n))) throw new Error('/proc/stat: unexpected first line');
  const [, , , idle, iowait] = fields as [number, number, number, number, number];
  const total = fields.reduce((sum, n) => sum + n, 0);
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return (total - idle - iowait) / ticksPerSecond;
}

/** How busy the machine's CPUs were over the next `ms` milliseconds: 0 idle, 1 every core busy. */
export async function machineBusyShare(ms: number): Promise<number> {
  const before = machineBusySeconds();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (machineBusySeconds() - before) / (ms / 1000) / cpus().length;
}
