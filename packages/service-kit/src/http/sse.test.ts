import { Writable } from "node:stream";
import { Hono } from "hono";
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EventBus } from "../events.ts";
import { requestLog, type ServiceEnv, streamEvents } from "./index.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

describe("streamEvents", () => {
  it("an error inside the stream goes to the request's log, not the console, and ends the stream", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino(
      { level: "info" },
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(JSON.parse(String(chunk)));
          done();
        },
      }),
    );
    const consoleError = vi.spyOn(console, "error").mockImplementation(() => {});
    const bus = new EventBus<"thing">();
    const app = new Hono<ServiceEnv>();
    app.use("*", requestLog(logger));
    app.get("/events", (c) => streamEvents(c, bus, {}, 60_000));

    const response = await app.request("/events");
    expect(response.status).toBe(200);
    // An event the stream cannot serialise: JSON has no BigInt.
    bus.publish({ type: "thing", workspaceId: null, data: { size: 1n } });
    const body = await response.text();

    expect(body).toBe(": connected\n\n");
    expect(consoleError).not.toHaveBeenCalled();
    const logged = lines.find((line) => line.msg === "event stream ended by an error");
    expect(logged?.level).toBe(50);
    expect(JSON.stringify(logged?.err)).toContain("BigInt");
  });
});
