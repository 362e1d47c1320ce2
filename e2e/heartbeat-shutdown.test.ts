import { createIdGenerator } from "@molecule/contracts";
import { workspaces, workspaceTokens } from "@molecule/db";
import { hashToken, mintToken } from "@molecule/identity";
import { loadConfig } from "@molecule/tenant-platform/config";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { killAllPlatformProcesses, startPlatformProcess } from "../test-support/process.ts";

/**
 * A real platform process (main.ts) answers steady-state heartbeats from memory and writes them in batches; SIGTERM
 * must write what it still holds before the process exits (the batcher is one of `shutdownOnSignals`' loops).
 */
let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await killAllPlatformProcesses();
  await database?.drop();
});

describe("a platform process stopped with SIGTERM", () => {
  it("writes the heartbeats it answered from memory before exiting", async () => {
    const env = { DATABASE_URL: database.url, CONTAINER_BACKEND: "docker", STATUS_SWEEP_INTERVAL: "3600" };
    const platform = await startPlatformProcess({ env });
    const id = createIdGenerator().next("ws");
    const token = mintToken("mwt");
    const long = new Date(Date.now() - 60 * 60_000);
    const orgId = loadConfig(env).org.id;
    await database.db.insert(workspaces).values({
      id,
      orgId,
      name: "steady",
      runtime: "echo",
      tier: 2,
      backend: "docker",
      status: "online",
      lastHeartbeatAt: long,
    });
    await database.db
      .insert(workspaceTokens)
      .values({ tokenHash: hashToken(token), workspaceId: id, kind: "auth" });

    const sent = Date.now();
    const response = await fetch(`${platform.url}/registry/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ workspace_id: id }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ ok: true, status: "online" });
    const exit = await platform.kill("SIGTERM");
    expect(exit.code).toBe(0);

    const [row] = await database.db
      .select({ at: workspaces.lastHeartbeatAt })
      .from(workspaces)
      .where(eq(workspaces.id, id));
    expect(row?.at?.getTime()).toBeGreaterThanOrEqual(sent - 1_000);
  });
});
