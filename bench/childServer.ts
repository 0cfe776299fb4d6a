import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { createInterface } from 'node:readline';

/** A server under test, run as its own process so its RSS is its own and a crash is visible. */
export interface ChildServer {
  readonly name: string;
  readonly pid: number;
  /** Highest RSS (bytes) sampled since the last `resetPeakRss()`. */
  peakRss(): number;
  resetPeakRss(): void;
  /** How it exited (signal or exit code), or undefined while it runs. */
  exited(): string | undefined;
  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  stop(): Promise<void>;
}

export interface ChildServerOptions {
  readonly name: string;
  /** The Node binary to run: this process's unless given (PostGraphile v5 needs Node 22). */
  readonly node?: string;
  readonly args: readonly string[];
  readonly env: Record<string, string>;
  /** Resolves true once the server answers; polled every 200 ms. */
  readonly ready: () => Promise<boolean>;
  readonly readyTimeoutMs?: number;
  /** Sees every line the server prints (they also go to stderr). */
  readonly onLine?: (line: string) => void;
}

const RSS_SAMPLE_MS = 250;
const running = new Set<ChildProcess>();

// A benchmark that dies half-way must not leave servers holding ports and Postgres connections.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});
// Node's default on these signals skips 'exit'; exiting explicitly runs the handler above.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(128 + os.constants.signals[signal]));

/** Starts `node ...args` (`options.node`, or this process's node), forwards its output to stderr prefixed with its name, waits until ready. */
export async function startChildServer(options: ChildServerOptions): Promise<ChildServer> {
  const child = spawn(options.node ?? process.execPath, options.args, {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      process.stderr.write(`[${options.name}] ${line}\n`);
      options.onLine?.(line);
    });
  }
  let exited: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      exited = signal ?? `code ${code}`;
      resolve();
    });
    // A binary that cannot be started (a peer's Node not installed) emits this and no 'exit'.
    child.once('error', (err) => {
      running.delete(child);
      exited ??= err.message;
      resolve();
    });
  });

  let peak = 0;
  const sample = () => {
    const rss = readRss(child.pid!);
    if (rss > peak) peak = rss;
  };
  const sampler = setInterval(sample, RSS_SAMPLE_MS);
  sampler.unref();

  const stop = async () => {
    clearInterval(sampler);
    if (exited) return;
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(force);
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (exited) throw new Error(`${options.name} exited (${exited}) before it was ready`);
    if (await options.ready().catch(() => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${options.name} not ready within ${options.readyTimeoutMs ?? 60_000} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }

  return {
    name: options.name,
    pid: child.pid!,
    peakRss: () => {
      sample();
      return peak;
    },
    resetPeakRss: () => {
      peak = 0;
      sample();
    },
    exited: () => exited,
    stop,
  };
}

function readRss(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
