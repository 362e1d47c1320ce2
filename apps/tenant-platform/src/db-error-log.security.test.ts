/**
 * A database error reaches the log as its SQLSTATE code, a generic message and its stack frames: never the
 * statement's parameters (request data) nor the driver's message. Checked on both drivers with a real failing
 * statement, through the HTTP error handler and through any `logger.error({ err })` (the services' serializers).
 */
import { Writable } from "node:stream";
import { createDatabase, type Database, workspaces } from "@molecule/db";
import { handleError, requestLog, type ServiceEnv } from "@molecule/service-kit/http";
import { logSerializers } from "@molecule/service-kit/log";
import { Hono } from "hono";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase } from "../../../test-support/pg.ts";

const MARKER = "marker-7f3a1c";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const text: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      text.push(String(chunk));
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { lines, text, logger: pino({ level: "info", serializers: logSerializers }, sink) };
}

/** An insert PostgreSQL refuses: NUL in a text column, next to a parameter that must not be logged either. */
function failingInsert(database: Database) {
  return database.db.insert(workspaces).values({
    id: `ws_${MARKER}`,
    orgId: "org_test",
    name: `a\u0000${MARKER}`,
    runtime: "echo",
    tier: 2,
    backend: "fake",
    status: "provisioning",
  });
}

const databases: { name: string; open: () => Promise<Database & { drop?: () => Promise<void> }> }[] = [
  { name: "postgres.js", open: () => createTestDatabase() },
  {
    name: "PGlite",
    open: async () => {
      const database = await createDatabase({ dataDir: "memory://" });
      await database.migrate();
      return database;
    },
  },
];

for (const driver of databases) {
  describe(`database errors in logs (${driver.name})`, () => {
    let database: Database & { drop?: () => Promise<void> };
    beforeAll(async () => {
      database = await driver.open();
    });
    afterAll(async () => {
      if (database.drop) await database.drop();
      else await database.close();
    });

    it("the error handler logs the code and a generic message, and answers a generic 500", async () => {
      const { lines, text, logger } = capture();
      const app = new Hono<ServiceEnv>();
      app.use("*", requestLog(logger));
      app.post("/insert", async (c) => {
        await failingInsert(database);
        return c.json({});
      });
      app.onError(handleError);
      const response = await app.request("/insert", { method: "POST" });
      expect(response.status).toBe(500);
      expect(await response.text()).not.toContain(MARKER);

      const logged = lines.find((line) => line.msg === "unhandled error");
      expect(logged?.err).toMatchObject({
        type: "LoggedDatabaseError",
        message: "database query failed (SQLSTATE 22021)",
        code: "22021",
        stack: expect.stringMatching(/^DatabaseError: database query failed \(SQLSTATE 22021\)\n\s+at /),
      });
      expect(text.join("")).not.toContain(MARKER);
      expect(text.join("")).not.toMatch(/insert into|Failed query|params/i);
    });

    it("any other log call with the error as `err` is reduced the same way", async () => {
      const { text, lines, logger } = capture();
      const error = await failingInsert(database).then(
        () => null,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(Error);
      logger.warn({ err: error }, "operation failed; will retry");
      expect(lines[0]?.err).toMatchObject({
        code: "22021",
        message: "database query failed (SQLSTATE 22021)",
      });
      expect(text.join("")).not.toContain(MARKER);
    });
  });
}

describe("errors that are not the database's", () => {
  it("are logged as they are, message and stack", () => {
    const { lines, logger } = capture();
    logger.error({ err: new Error("the backend said no") }, "unhandled error");
    expect(lines[0]?.err).toMatchObject({ type: "Error", message: "the backend said no" });
  });
});
