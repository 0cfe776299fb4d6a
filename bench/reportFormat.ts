import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { ROOT } from './lookupSettings.js';

/** How the lake benchmarks print figures and what they were measured on. */

/** Milliseconds with the digits that mean something at that size; '–' for no value. */
export const fmtMs = (ms: number) => (Number.isNaN(ms) ? '–' : ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0));
export const int = (n: number) => Math.round(n).toLocaleString('en-US');
export const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

/** Cores, CPU model, memory and node version of the machine measured on. */
export function machine(): string {
  return `${availableParallelism()} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`;
}

/** The commit measured, so that a figure can be traced to the code that produced it. */
export function gitRevision(): string {
  try {
    // Read-only: no optional locks, so a concurrent git command in the checkout is not disturbed.
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, GIT_OPTIONAL_LOCKS: '0' } }).trim();
    return `commit ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--untracked-files=no') ? ' plus uncommitted changes' : ''}`;
  } catch {
    return 'commit unknown (not a git checkout)';
  }
}
