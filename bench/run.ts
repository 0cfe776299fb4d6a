/**
 * Entry point of `npm run bench -- <name> [options]`. Each benchmark prints its report on stdout
 * and its progress on stderr; a benchmark that saw failed requests exits non-zero.
 */
const benchmarks: Record<string, () => Promise<(argv: string[]) => Promise<void>>> = {
  analytics: async () => (await import('./analytics.js')).analytics,
  fresh: async () => (await import('./fresh.js')).fresh,
  joins: async () => (await import('./joins.js')).joins,
  lookups: async () => (await import('./lookups.js')).lookups,
  risk: async () => (await import('./risk.js')).risk,
};

const [name, ...argv] = process.argv.slice(2);
const load = name ? benchmarks[name] : undefined;
if (!load) {
  console.error(`usage: npm run bench -- <${Object.keys(benchmarks).join('|')}> [options]`);
  process.exit(2);
}
try {
  await (await load())(argv);
} catch (err) {
  console.error(`bench ${name} failed: ${(err as Error).message}`);
  process.exitCode = 1;
}
