import { badUserInput, type PublicError } from '../core/errors.js';

/**
 * Variables are JSON, and JSON.parse rounds an integer past 2^53: `{"id": 9007199254740993}`
 * arrives as ...992, and GraphQL's ID takes an integer number as its text, so a lookup answered
 * another invoice without a word. No argument of this API takes such a number (ids are strings,
 * money is a string, Int stops at 2^31, the one Float is 0 to 1), so one is refused wherever it is.
 */
export function refuseRoundedNumbers(variables: unknown): PublicError | undefined {
  const path = roundedNumberAt(variables, '');
  return path === undefined ? undefined : badUserInput(`Variable ${path || 'value'} is a number beyond 2^53, which JSON rounds; send ids as strings`);
}

function roundedNumberAt(value: unknown, path: string): string | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value) ? path : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [key, inner] of Object.entries(value)) {
    const found = roundedNumberAt(inner, Array.isArray(value) ? `${path}[${key}]` : path ? `${path}.${key}` : `$${key}`);
    if (found !== undefined) return found;
  }
  return undefined;
}
