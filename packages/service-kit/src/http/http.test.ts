import { Writable } from "node:stream";
import { DomainError, ErrorEnvelope } from "@molecule/contracts";
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { handleError, limitBody, notFound, parseWith, requestLog, type ServiceEnv } from "./index.ts";

function testApp() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  const logger = pino({ level: "info" }, stream);
  const app = new Hono<ServiceEnv>();
  app.use("*", requestLog(logger));
  app.use("*", limitBody(16));
  app.get("/things/:id", (c) => c.json({ id: c.req.param("id") }));
  app.get("/conflict", () => {
    throw new DomainError("conflict", "already exists", { id: "x" });
  });
  app.get("/broken", () => {
    throw new Error("password=hunter2 in a driver message");
  });
  app.post("/echo", async (c) =>
    c.json(parseWith(z.object({ name: z.string() }), await c.req.json(), "body")),
  );
  app.notFound(notFound);
  app.onError(handleError);
  return { app, lines };
}

async function envelope(response: Response) {
  return ErrorEnvelope.parse(await response.json()).error;
}

describe("request id and log line", () => {
  it("returns a request id and writes one line with method, route, status and duration", async () => {
    const { app, lines } = testApp();
    const response = await app.request("/things/42");
    expect(response.status).toBe(200);
    const requestId = response.headers.get("x-request-id");
    expect(requestId).toMatch(/^req_[0-9a-f]{16}$/);
    expect(lines).toEqual([
      expect.objectContaining({
        msg: "request",
        requestId,
        method: "GET",
        route: "/things/:id",
        status: 200,
        durationMs: expect.any(Number),
      }),
    ]);
  });
});

describe("debug routes", () => {
  function quietApp(level: "info" | "debug") {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const app = new Hono<ServiceEnv>();
    app.use("*", requestLog(pino({ level }, stream), { debugRoutes: ["POST /beats/:id"] }));
    app.post("/beats/:id", (c) => (c.req.param("id") === "bad" ? c.json({}, 401) : c.json({ ok: true })));
    app.get("/beats/:id", (c) => c.json({ ok: true }));
    return { app, lines };
  }

  it("a successful answer on a debug route is logged at debug; other answers and routes at info", async () => {
    const { app, lines } = quietApp("debug");
    await app.request("/beats/1", { method: "POST" });
    await app.request("/beats/bad", { method: "POST" });
    await app.request("/beats/1");
    expect(lines.map((line) => [line.level, line.method, line.status])).toEqual([
      [20, "POST", 200],
      [30, "POST", 401],
      [30, "GET", 200],
    ]);
    expect(lines[0]).toMatchObject({ route: "/beats/:id", requestId: expect.stringMatching(/^req_/) });
  });

  it("at info, a successful answer on a debug route writes no line", async () => {
    const { app, lines } = quietApp("info");
    const response = await app.request("/beats/1", { method: "POST" });
    expect(response.headers.get("x-request-id")).toMatch(/^req_/);
    await app.request("/beats/bad", { method: "POST" });
    expect(lines.map((line) => line.status)).toEqual([401]);
  });
});

describe("error envelope", () => {
  it("maps a domain error to its status and keeps its message and details", async () => {
    const { app } = testApp();
    const response = await app.request("/conflict");
    expect(response.status).toBe(409);
    expect(await envelope(response)).toEqual({
      code: "conflict",
      message: "already exists",
      requestId: response.headers.get("x-request-id"),
      details: { id: "x" },
    });
  });

  it("answers an unknown error with a generic 500 and the request id, logging the error itself", async () => {
    const { app, lines } = testApp();
    const response = await app.request("/broken");
    expect(response.status).toBe(500);
    const body = await envelope(response);
    expect(body).toEqual({
      code: "internal",
      message: "internal error; quote the request id when reporting it",
      requestId: response.headers.get("x-request-id"),
    });
    expect(JSON.stringify(body)).not.toContain("hunter2");
    const logged = lines.find((line) => line.msg === "unhandled error");
    expect(logged).toMatchObject({ requestId: body.requestId, err: { message: expect.any(String) } });
  });

  it("answers an unknown route with not_found naming the method and path", async () => {
    const { app } = testApp();
    const response = await app.request("/nowhere", { method: "DELETE" });
    expect(response.status).toBe(404);
    expect(await envelope(response)).toMatchObject({
      code: "not_found",
      message: "no route for DELETE /nowhere",
    });
  });

  it("refuses a body over the limit with payload_too_large", async () => {
    const { app } = testApp();
    const response = await app.request("/echo", {
      method: "POST",
      body: JSON.stringify({ name: "x".repeat(32) }),
    });
    expect(response.status).toBe(413);
    expect(await envelope(response)).toMatchObject({
      code: "payload_too_large",
      message: "body exceeds 16 bytes",
    });
  });

  it("a streamed body over the limit is a 413 logged once, by the request line, never as an unhandled error", async () => {
    const { app, lines } = testApp();
    const chunks = [new TextEncoder().encode('{"name":"'), new TextEncoder().encode(`${"x".repeat(32)}"}`)];
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const chunk = chunks.shift();
        if (chunk) controller.enqueue(chunk);
        else controller.close();
      },
    });
    // No Content-Length: the limit is only noticed while the handler reads the body.
    const response = await app.request("/echo", { method: "POST", body, duplex: "half" } as RequestInit);
    expect(response.status).toBe(413);
    expect(await envelope(response)).toMatchObject({
      code: "payload_too_large",
      message: "body exceeds 16 bytes",
    });
    expect(lines.map((line) => [line.msg, line.status])).toEqual([["request", 413]]);
  });

  it("a 4xx the framework raises keeps its status in the envelope and is not an unhandled error", async () => {
    const { app, lines } = testApp();
    app.get("/framework", () => {
      throw new HTTPException(415, { message: "no such media" });
    });
    const response = await app.request("/framework");
    expect(response.status).toBe(415);
    expect(await envelope(response)).toMatchObject({
      code: "unsupported_media_type",
      message: "no such media",
    });
    expect(lines.map((line) => line.msg)).toEqual(["request"]);
  });

  it("a body that fails validation is bad_request naming the first issue's path, every issue in details", async () => {
    const { app } = testApp();
    const response = await app.request("/echo", { method: "POST", body: JSON.stringify({ name: 7 }) });
    expect(response.status).toBe(400);
    const body = await envelope(response);
    expect(body.message).toMatch(/^invalid body: name: /);
    expect(body.details).toEqual({ issues: [{ path: "name", message: expect.any(String) }] });
  });
});
