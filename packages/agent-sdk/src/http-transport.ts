/**
 * How the platform client sends a request: `nodeHttpTransport` (the default) over node:http/https, or any `fetch`
 * through `fetchTransport`. The default is not `fetch` because Node loads and compiles undici on a process's first
 * `fetch` (about 30 ms on a small machine), and that first call is an agent's registration: every workspace would
 * come online that much later. node:http is already loaded for the agent's own A2A server.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";

export interface TransportRequest {
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  signal: AbortSignal;
}

/** A whole answer: the client reads every body as text. */
export interface TransportAnswer {
  status: number;
  text: string;
}

export type Transport = (url: string, request: TransportRequest) => Promise<TransportAnswer>;

/** The subset of `fetch` this client can use instead; the global fetch satisfies it. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export function fetchTransport(fetch: FetchLike): Transport {
  return async (url, { method, headers, body, signal }) => {
    const response = await fetch(url, { method, headers, body, signal });
    return { status: response.status, text: await response.text() };
  };
}

/** One request on Node's keep-alive agent (it honours the server's `Keep-Alive: timeout`); the signal ends it. */
export const nodeHttpTransport: Transport = (url, { method, headers, body, signal }) =>
  new Promise((resolve, reject) => {
    const target = new URL(url);
    const send = target.protocol === "https:" ? httpsRequest : httpRequest;
    const sent =
      body === undefined ? headers : { ...headers, "content-length": String(Buffer.byteLength(body)) };
    const request = send(target, { method, headers: sent, signal }, (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("close", () => {
        if (!response.complete) reject(new Error("the connection closed before the response ended"));
      });
      response.on("end", () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    request.on("error", reject);
    request.end(body);
  });
