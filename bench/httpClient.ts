import http from 'node:http';

/*
 * The benchmarks' HTTP client for timed requests: node:http over one kept-alive connection.
 * Node's fetch (undici behind the web API) spent about 0.5 to 0.8 ms of its own on each request
 * to a bare node:http server on this machine, where this client spends about 0.1 ms (by hand,
 * 2,000 empty requests each); node-postgres, the Postgres side's client, adds no such cost, so
 * with fetch the gateway's small answers were measured mostly as the client's overhead.
 */

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

export interface HttpAnswer {
  readonly status: number;
  readonly text: string;
}

/**
 * POSTs `body` as JSON and reads the whole answer as text. `spaces` before the JSON make the same
 * request another text: the gateway replays a response only to the same text (server/keptAnalytics.ts).
 */
export function postJson(url: string, body: unknown, timeoutMs = 300_000, spaces = 0): Promise<HttpAnswer> {
  const payload = ' '.repeat(spaces) + JSON.stringify(body);
  return post(url, payload, timeoutMs).catch((err: Error & { reusedSocket?: boolean }) => {
    // A kept-alive connection the server closed as the request went out (node's documented
    // race, request.reusedSocket): the request never reached it, so it is sent again, once.
    if (err.reusedSocket && (err as NodeJS.ErrnoException).code === 'ECONNRESET') return post(url, payload, timeoutMs);
    throw err;
  });
}

function post(url: string, payload: string, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      url,
      { method: 'POST', agent, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        response.on('error', reject);
      },
    );
    request.on('timeout', () => request.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    // Marked before it reaches postJson: whether the failed request went out on a reused connection.
    request.on('error', (err) => reject(Object.assign(err, { reusedSocket: request.reusedSocket })));
    request.end(payload);
  });
}

/** Closes the kept-alive connection, so that the process can exit. */
export function closeHttpClient(): void {
  agent.destroy();
}
