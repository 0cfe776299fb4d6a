import { badUserInput, type PublicError } from '../core/errors.js';

/**
 * Variables are JSON, and JSON.parse rounds an integer past 2^53: `{"id": 9007199254740993}`
 * arrives as ...992, and GraphQL's ID takes an integer number as its text, so a lookup answered
 * another invoice without a word. No argument of this API takes such a number (ids are strings,
 * money is a string, Int stops at 2^31, its Floats, minScore, are 0 to 1), so one is refused wherever it is.
 */
export function refuseRoundedNumbers(variables: unknown): PublicError | undefined {
  const found = roundedNumberAt(variables, '', 0);
  if (found === TOO_DEEP) return badUserInput(`Variables nest more than ${MAX_DEPTH} levels deep; no argument of this API does`);
  return found === undefined ? undefined : badUserInput(`Variable ${found || 'value'} is a number beyond 2^53, which JSON rounds; send ids as strings`);
}

/** Deeper than any argument of this API nests: refused before anything walks it recursively. */
const MAX_DEPTH = 32;
const TOO_DEEP = Symbol('too deep');

function roundedNumberAt(value: unknown, path: string, depth: number): string | typeof TOO_DEEP | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value) ? path : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  if (depth >= MAX_DEPTH) return TOO_DEEP;
  for (const [key, inner] of Object.entries(value)) {
    const found = roundedNumberAt(inner, Array.isArray(value) ? `${path}[${key}]` : path ? `${path}.${key}` : `$${key}`, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}
