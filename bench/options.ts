import { parseArgs } from 'node:util';

/**
 * A benchmark's command line: every option is `--name value` with a default; a bad one stops the
 * run with its message and the usage line.
 */
export function parseBenchOptions<Name extends string>(argv: string[], defaults: Readonly<Record<Name, string>>, usage: string) {
  const options = Object.fromEntries(Object.entries(defaults).map(([name, value]) => [name, { type: 'string', default: value }])) as Record<Name, { type: 'string'; default: string }>;
  let values: Record<Name, string>;
  try {
    values = parseArgs({ args: argv, options }).values as unknown as Record<Name, string>;
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${usage}`);
  }
  const wholeOf = (raw: string, name: Name, min: number) => {
    const n = Number(raw.replaceAll('_', ''));
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be a whole number of at least ${min}\n${usage}`);
    return n;
  };
  return {
    text: (name: Name): string => values[name],
    /** A whole number, `_` allowed as a separator (10_000_000). */
    whole: (name: Name, min: number): number => wholeOf(values[name], name, min),
    /** Whole numbers separated by commas (100,500,1000). */
    wholeList: (name: Name, min: number): number[] => values[name].split(',').map((raw) => wholeOf(raw, name, min)),
  };
}
