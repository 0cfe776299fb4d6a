import { transformIterator } from '../core/asyncIterators.js';
import { createSourceEventStream, execute, print, type ExecutionArgs, type ExecutionResult } from 'graphql';

type Result = ExecutionResult | Promise<ExecutionResult>;

/**
 * graphql-js's subscribe, except that subscribers with the same document and variables share
 * one execution per event: with a hundred subscribers on one query, an event was executed a
 * hundred times. The event object is the key (every subscriber's iterator receives the same
 * object from the event bus), so nothing outlives the event. `scope` separates subscribers
 * whose results may differ for the same event (the viewer's access scope).
 */
export function createSharedSubscribe(scope: (args: ExecutionArgs) => string) {
  const executions = new WeakMap<object, Map<string, Result>>();
  const documentKeys = new WeakMap<object, string>();

  return async function subscribe(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
    const stream = await createSourceEventStream(args);
    if (!isAsyncIterable(stream)) return stream as ExecutionResult;
    let document = documentKeys.get(args.document);
    if (document === undefined) {
      document = print(args.document);
      documentKeys.set(args.document, document);
    }
    const key = `${scope(args)}\u0000${args.operationName ?? ''}\u0000${document}\u0000${JSON.stringify(args.variableValues ?? {})}`;
    const run = (event: unknown): Result => execute({ ...args, rootValue: event });
    const shared = (event: unknown): Result => {
      if (typeof event !== 'object' || event === null) return run(event);
      let byKey = executions.get(event);
      if (!byKey) executions.set(event, (byKey = new Map()));
      let result = byKey.get(key);
      if (!result) byKey.set(key, (result = run(event)));
      return result;
    };
    return transformIterator((stream as AsyncIterable<unknown>)[Symbol.asyncIterator](), shared);
  };
}

function isAsyncIterable(value: unknown): value is AsyncIterableIterator<unknown> {
  return typeof (value as AsyncIterable<unknown>)?.[Symbol.asyncIterator] === 'function';
}
