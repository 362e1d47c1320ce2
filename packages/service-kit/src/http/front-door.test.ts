import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { serve } from "@hono/node-server";
import { DomainError, ErrorEnvelope } from "@molecule/contracts";
import { Hono } from "hono";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  frontDoorServer,
  handleError,
  notFound,
  type RawRoute,
  readBody,
  requestLog,
  type ServiceEnv,
  writeJson,
} from "./index.ts";

const lines: Record<string, unknown>[] = [];
const logger = pino(
  { level: "debug" },
  new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  }),
);

/** The same errors thrown from a raw route and from a Hono route must be answered alike. */
const failures: Record<string, () => never> = {
  domain: () => {
    throw new DomainError("conflict", "already exists", { id: "x" });
  },
  unknown: () => {
    throw new Error("password=hunter2 in a driver message");
  },
  unavailable: () => {
    throw new DomainError("upstream_unavailable", "not now");
  },
};

function fail(kind: string): never {
  (failures[kind] ?? failures.domain)?.();
  throw new Error("unreachable");
}

const routes: RawRoute[] = [
  {
    method: "POST",
    path: "/things/:id/echo",
    handler: async (req, res, context) => {
      const body = await readBody(req, res, 16, "echo body exceeds 16 bytes");
      writeJson(res, 200, { id: context.params.id, body: body.toString("utf8") });
    },
  },
  {
    method: "GET",
    path: "/fail/:kind",
    handler: async (_req, res, context) => {
      if (context.params.kind === "unavailable") res.setHeader("retry-after", "30");
      fail(context.params.kind ?? "");
    },
  },
  {
    method: "POST",
    path: "/beat",
    quiet: true,
    handler: async (_req, res) => writeJson(res, 200, { ok: true }),
  },
];

let server: Server;
let base: string;

beforeAll(async () => {
  const app = new Hono<ServiceEnv>();
  app.use("*", requestLog(logger));
  app.get("/hono/fail/:kind", (c) => fail(c.req.param("kind")));
  app.get("/things/:id/echo", (c) => c.json({ from: "hono", id: c.req.param("id") }));
  app.notFound(notFound);
  app.onError(handleError);
  server = await new Promise<Server>((resolve) => {
    const made = serve(
      { fetch: app.fetch, port: 0, hostname: "127.0.0.1", createServer: frontDoorServer(routes, logger) },
      () => resolve(made as Server),
    );
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

function lineFor(requestId: string | null) {
  return lines.find((line) => line.msg === "request" && line.requestId === requestId);
}

describe("frontDoor", () => {
  it("serves a raw route with a request id, its params decoded, and one request line like Hono's", async () => {
    const response = await fetch(`${base}/things/a%20b/echo?x=1`, { method: "POST", body: "hello" });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ id: "a b", body: "hello" });
    const requestId = response.headers.get("x-request-id");
    expect(requestId).toMatch(/^req_[0-9a-f]{16}$/);
    expect(lineFor(requestId)).toEqual(
      expect.objectContaining({
        level: 30,
        method: "POST",
        route: "/things/:id/echo",
        status: 200,
        durationMs: expect.any(Number),
      }),
    );
  });

  it("hands any other method or path to the Hono app", async () => {
    const other = await fetch(`${base}/things/1/echo`);
    expect(await other.json()).toEqual({ from: "hono", id: "1" });
    const unknown = await fetch(`${base}/things/1/echo/more`, { method: "POST" });
    expect(unknown.status).toBe(404);
    expect(ErrorEnvelope.parse(await unknown.json()).error.message).toBe(
      "no route for POST /things/1/echo/more",
    );
  });

  it("answers a thrown error with the same status and envelope as the Hono error handler", async () => {
    for (const kind of Object.keys(failures)) {
      const raw = await fetch(`${base}/fail/${kind}`);
      const hono = await fetch(`${base}/hono/fail/${kind}`);
      expect(raw.status, kind).toBe(hono.status);
      const rawBody = ErrorEnvelope.parse(await raw.json()).error;
      const honoBody = ErrorEnvelope.parse(await hono.json()).error;
      expect(rawBody.requestId).toBe(raw.headers.get("x-request-id"));
      expect({ ...rawBody, requestId: "" }).toEqual({ ...honoBody, requestId: "" });
      expect(JSON.stringify(rawBody)).not.toContain("hunter2");
      expect(lineFor(raw.headers.get("x-request-id"))).toMatchObject({
        status: raw.status,
        route: "/fail/:kind",
      });
    }
    const unavailable = await fetch(`${base}/fail/unavailable`);
    expect(unavailable.status).toBe(503);
    expect(unavailable.headers.get("retry-after")).toBe("30");
    const unknownLine = lines.find((line) => line.msg === "unhandled error");
    expect(unknownLine?.requestId).toMatch(/^req_/);
  });

  it("refuses a body over the limit with 413, declared or streamed", async () => {
    const declared = await fetch(`${base}/things/1/echo`, { method: "POST", body: "x".repeat(17) });
    expect(declared.status).toBe(413);
    expect(ErrorEnvelope.parse(await declared.json()).error).toMatchObject({
      code: "payload_too_large",
      message: "echo body exceeds 16 bytes",
    });
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("x".repeat(10)));
        controller.enqueue(new TextEncoder().encode("x".repeat(10)));
        controller.close();
      },
    });
    const streamed = await fetch(`${base}/things/1/echo`, {
      method: "POST",
      body: chunks,
      duplex: "half",
    } as RequestInit);
    expect(streamed.status).toBe(413);
  });

  it("logs a quiet route's success at debug", async () => {
    const response = await fetch(`${base}/beat`, { method: "POST" });
    expect(lineFor(response.headers.get("x-request-id"))).toMatchObject({ level: 20, route: "/beat" });
  });
});
