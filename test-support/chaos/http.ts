/**
 * Requests that survive a killed process: each is sent to one replica and, when no answer comes (connection refused
 * while the replica restarts, or reset by the kill), sent again with the same idempotency key to the next replica,
 * until one answers. An answer, whatever its status, is the request's terminal state.
 */
import type { Ledger } from "./ledger.ts";

export interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
  body: any;
}

/** Thrown by a send that got no HTTP answer at all. */
export class NoAnswer extends Error {}

/** How long one request may go unanswered before the run fails (every replica is restarted well within it). */
const UNANSWERED_LIMIT_MS = 240_000;

/**
 * Sends through `urls[first]`, then the next replica on each `NoAnswer`, until an answer comes. `send` must use the
 * same idempotency key on every try. `ledger` (given for the driver's requests, not for reads) counts the resends.
 */
export async function sendUntilAnswered(
  what: string,
  urls: readonly string[],
  first: number,
  ledger: Ledger | null,
  send: (url: string) => Promise<Answer>,
): Promise<Answer> {
  const started = Date.now();
  let lastError: unknown;
  for (let attempt = 0; ; attempt++) {
    const url = urls[(first + attempt) % urls.length] as string;
    try {
      return await send(url);
    } catch (error) {
      if (!(error instanceof NoAnswer)) throw error;
      lastError = error;
      if (ledger) ledger.resends += 1;
    }
    if (Date.now() - started > UNANSWERED_LIMIT_MS) {
      throw new Error(`${what}: no replica answered in ${UNANSWERED_LIMIT_MS} ms (${String(lastError)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250 + (attempt % 4) * 250));
  }
}

/** One JSON request with a bearer token and, for changes, an Idempotency-Key; NoAnswer when nothing answered. */
export async function sendJson(
  url: string,
  token: string,
  request: { method: string; path: string; body?: unknown; idempotencyKey?: string },
): Promise<Answer> {
  let response: Response;
  try {
    response = await fetch(`${url}${request.path}`, {
      method: request.method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(request.body === undefined ? {} : { "content-type": "application/json" }),
        ...(request.idempotencyKey ? { "idempotency-key": request.idempotencyKey } : {}),
      },
      body: request.body === undefined ? undefined : JSON.stringify(request.body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new NoAnswer(`${request.method} ${url}${request.path}: ${(error as Error).message}`);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    // the process died while it was answering: the request may or may not have been applied
    throw new NoAnswer(`${request.method} ${url}${request.path}: ${(error as Error).message}`);
  }
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, body };
}

/** How an answer is counted in the ledger: `202`, `409 invalid_transition`, … */
export function outcomeOf(answer: Answer): string {
  const code = answer.body?.error?.code;
  return typeof code === "string" ? `${answer.status} ${code}` : String(answer.status);
}
