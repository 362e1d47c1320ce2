/**
 * SIGTERM during a long operation, with real processes: a tenant platform in flyio mode (against the Fly emulator on
 * loopback) provisions a workspace whose machine takes ten minutes to boot, so its provision waits for it. On
 * SIGTERM the runner gives the attempt back at once (a `released` step, pending, the attempt refunded) and the process
 * exits 0 within its shutdown deadline (20 s) instead of being cut off there with the row still leased; the next
 * process resumes the operation on the same machine.
 */
import { randomBytes } from "node:crypto";
import { operations } from "@molecule/db";
import { type FlyEmulator, startFlyEmulator } from "@molecule/fly-emulator";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const APP = "molecule-ws-shutdown";
const TOKEN = "fly-shutdown-test-token";
let fly: FlyEmulator;
let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  fly = await startFlyEmulator({ token: TOKEN, apps: [APP], delays: { bootMs: 600_000 } });
  database = await createTestDatabase();
  env = {
    DATABASE_URL: database.url,
    MOLECULE_DEPLOYMENT: uniqueDeployment(),
    CONTAINER_BACKEND: "flyio",
    FLY_API_TOKEN: TOKEN,
    FLY_WORKSPACE_APP: APP,
    FLY_API_BASE_URL: fly.url,
    // Long enough that only a released row, not a lapsed lease, lets the next process claim it during the test.
    OPERATION_LEASE_SECONDS: "600",
    // One identity for both processes: the second opens what the first sealed.
    ADMIN_TOKEN: `adm_${randomBytes(16).toString("hex")}`,
    SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
  };
});
afterAll(async () => {
  await killAllPlatformProcesses();
  await fly?.close();
  await database?.drop();
});

async function operationRow(id: string) {
  const [row] = await database.db.select().from(operations).where(eq(operations.id, id));
  if (!row) throw new Error(`no operation ${id}`);
  return row;
}

/** Waits until `platform`'s runner holds the operation with its machine created and booting. */
async function inFlight(id: string, notBy?: string | null) {
  return waitFor(
    `operation ${id} to be running${notBy ? ` under another runner than ${notBy}` : ""} with its machine booting`,
    async () => {
      const row = await operationRow(id);
      const booting = fly.machines(APP).filter((machine) => machine.state !== "destroyed");
      return row.status === "running" && row.lockedBy !== notBy && booting.length === 1 ? row : undefined;
    },
    60_000,
    200,
  );
}

describe("SIGTERM during a long operation", { timeout: 240_000 }, () => {
  it("releases the attempt at once and exits 0; the next process resumes the operation on the same machine", async () => {
    const first: PlatformProcess = await startPlatformProcess({ env });
    const created = await first.call("POST", "/workspaces", { name: "slow-boot", runtime: "echo" });
    expect(created.status).toBe(202);
    const operationId: string = created.body.operation.id;
    const held = await inFlight(operationId);
    expect(held.attempts).toBe(1);

    expect(await first.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(first.output()).toContain("operation released at shutdown");
    const released = await operationRow(operationId);
    expect(released).toMatchObject({ status: "pending", lockedBy: null, lockedUntil: null, attempts: 0 });
    expect(released.steps).toContainEqual(
      expect.objectContaining({ name: "released", detail: "attempt 1 given back: the process stopped" }),
    );

    // The next start claims it straight away (the lease would have held it for ten minutes) and reuses the machine.
    const second = await startPlatformProcess({ env: { ...env, PORT: String(first.port) } });
    const resumed = await inFlight(operationId, held.lockedBy);
    expect(resumed.attempts).toBe(1);
    expect(fly.machines(APP).filter((machine) => machine.state !== "destroyed")).toHaveLength(1);
    expect(await second.kill("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(await operationRow(operationId)).toMatchObject({ status: "pending", attempts: 0, lockedBy: null });
  });
});
