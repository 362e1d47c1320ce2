import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProvisionerError } from "./errors.ts";
import { type JsonCall, JsonClient, type JsonClientOptions } from "./json-client.ts";

/** A server that answers each request with the next scripted answer, and remembers what it was sent. */
interface Answer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}

let server: Server;
let baseUrl: string;
let script: Answer[] = [];
const seen: { method: string; url: string; headers: Record<string, unknown>; body: string }[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => {
      body += chunk;
    });
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const answer = script.shift() ?? { status: 500 };
      res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
      res.end(answer.body ?? "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function client(overrides: Partial<JsonClientOptions<JsonCall>> = {}) {
  const waits: number[] = [];
  let sends = 0;
  const json = new JsonClient<JsonCall>({
    retry: { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1_000, maxElapsedMs: 60_000 },
    requestTimeoutMs: 5_000,
    now: () => 0,
    random: () => 0,
    sleep: async (ms) => {
      waits.push(ms);
    },
    requestIdHeader: "x-request-id",
    retryMessage: "test request failed; retrying",
    url: (call) => new URL(call.path, baseUrl),
    headers: () => ({ "x-send": String(++sends) }),
    answerError: (call, reply) =>
      new ProvisionerError("backend_error", `${call.op} answered ${reply.status}`, reply.status >= 500, {
        transient: reply.status === 429 || reply.status >= 500,
      }),
    connectionError: (call) =>
      new ProvisionerError("backend_unavailable", `${call.op}: connection error`, true, {
        transient: true,
      }),
    abortedError: (call) => new ProvisionerError("timeout", `${call.op} aborted`, true),
    ...overrides,
  });
  return { json, waits };
}

describe("JsonClient", () => {
  it("retries 5xx and 429 with the policy's waits, honouring Retry-After, building headers afresh per send", async () => {
    script = [
      { status: 503 },
      { status: 429, headers: { "retry-after": "2" } },
      { status: 200, body: '{"ok":true}', headers: { "x-request-id": "req_1" } },
    ];
    seen.length = 0;
    const { json, waits } = client();
    const reply = await json.call({ op: "thing", method: "POST", path: "/things", body: { a: 1 } });
    expect(reply).toMatchObject({ status: 200, body: { ok: true }, requestId: "req_1" });
    expect(waits).toEqual([50, 2_000]);
    expect(seen.map((s) => s.headers["x-send"])).toEqual(["1", "2", "3"]);
    expect(seen[0]).toMatchObject({ method: "POST", url: "/things", body: '{"a":1}' });
    expect(seen[0]?.headers["content-type"]).toBe("application/json");
  });

  it("throws the mapped error at once for an answer that is not transient, and returns accepted statuses", async () => {
    script = [{ status: 400, body: '{"error":"raw upstream words"}' }];
    const { json, waits } = client();
    await expect(json.call({ op: "thing", method: "GET", path: "/x" })).rejects.toThrow(
      /^thing answered 400$/,
    );
    expect(waits).toEqual([]);
    script = [{ status: 404, body: "not json" }];
    await expect(json.call({ op: "thing", method: "GET", path: "/x", accept: [404] })).resolves.toMatchObject(
      {
        status: 404,
        body: "not json",
      },
    );
  });

  it("gives up after maxAttempts and says how many", async () => {
    script = [{ status: 502 }, { status: 502 }, { status: 502 }];
    const { json } = client();
    await expect(json.call({ op: "thing", method: "GET", path: "/x" })).rejects.toThrow(
      "thing answered 502; gave up after 3 attempts",
    );
    script = [{ status: 502 }];
    await expect(json.call({ op: "thing", method: "GET", path: "/x", maxAttempts: 1 })).rejects.toThrow(
      /^thing answered 502$/,
    );
  });

  it("retries a refused connection through the connection hook", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const { json, waits } = client({ url: (call) => new URL(call.path, `http://127.0.0.1:${port}`) });
    await expect(json.call({ op: "thing", method: "GET", path: "/x" })).rejects.toThrow(
      "thing: connection error; gave up after 3 attempts",
    );
    expect(waits).toEqual([50, 100]);
  });

  it("stops when the call's signal aborts, before a send and while waiting to retry", async () => {
    const before = new AbortController();
    before.abort();
    const { json } = client();
    await expect(
      json.call({ op: "thing", method: "GET", path: "/x", signal: before.signal }),
    ).rejects.toThrow("thing aborted");

    script = [{ status: 503 }, { status: 200, body: "{}" }];
    seen.length = 0;
    const during = new AbortController();
    const { json: aborting } = client({
      sleep: async () => {
        during.abort();
      },
    });
    await expect(
      aborting.call({ op: "thing", method: "GET", path: "/x", signal: during.signal }),
    ).rejects.toThrow("thing aborted");
    expect(seen).toHaveLength(1);
  });

  it("sends nothing when the url hook refuses the call", async () => {
    seen.length = 0;
    const { json } = client({
      url: () => {
        throw new ProvisionerError("invalid_spec", "not a plain path", false);
      },
    });
    await expect(json.call({ op: "thing", method: "GET", path: "/../x" })).rejects.toThrow(
      "not a plain path",
    );
    expect(seen).toHaveLength(0);
  });
});
