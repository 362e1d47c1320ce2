/**
 * Two replicas of each service on one PostgreSQL database behave as one: what is caused through one is seen on the
 * other's event stream, a client resumes its stream on the other replica, a workspace-token stream on one ends when
 * the token is rotated through the other, and the liveness sweep runs on one replica at a time. Real processes.
 */
import { randomBytes } from "node:crypto";
import { createDatabase } from "@molecule/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { TENANT_LIVENESS_LOCK } from "../apps/tenant-platform/src/services/liveness.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { openSse } from "../test-support/sse.ts";
import { waitFor } from "../test-support/wait.ts";

describe("two tenant platform replicas on one database", () => {
  let database: TestDatabase;
  let a: PlatformProcess;
  let b: PlatformProcess;

  beforeAll(async () => {
    database = await createTestDatabase();
    // Everything a replica's identity is made of is the same for both: database, deployment, keys, admin token.
    const env = {
      DATABASE_URL: database.url,
      MOLECULE_DEPLOYMENT: uniqueDeployment(),
      ADMIN_TOKEN: `adm_${randomBytes(16).toString("hex")}`,
      SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
      HEARTBEAT_STALE_AFTER: "2",
      STATUS_SWEEP_INTERVAL: "0.3",
    };
    [a, b] = await Promise.all([startPlatformProcess({ env }), startPlatformProcess({ env })]);
  });

  afterAll(async () => {
    await killAllPlatformProcesses();
    await database?.drop();
  });

  async function createExternal(name: string): Promise<string> {
    const created = await a.call("POST", "/workspaces", { name, external: true });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    return created.body.workspace.id;
  }

  /** The operator registers the agent by hand (on `replica`): a new bearer token, any earlier one revoked. */
  async function register(replica: PlatformProcess, id: string): Promise<string> {
    const registered = await replica.call("POST", "/registry/register", { id });
    expect(registered.status, JSON.stringify(registered.body)).toBe(200);
    return registered.body.auth_token;
  }

  /** The agent's heartbeat through `replica`; the first one brings the workspace online. */
  async function heartbeat(replica: PlatformProcess, id: string, token: string): Promise<void> {
    const beat = await fetch(`${replica.url}/registry/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ workspace_id: id }),
    });
    expect(beat.status).toBe(200);
  }

  it("a workspace created and brought online through A is on B's GET /events, with the same ids", async () => {
    const onA = await openSse(`${a.url}/events`, a.adminToken);
    const onB = await openSse(`${b.url}/events`, b.adminToken);
    expect([onA.status, onB.status]).toEqual([200, 200]);
    const id = await createExternal("seen-everywhere");
    await heartbeat(a, id, await register(a, id));
    const online = (frame: { event?: string; data?: { workspaceId?: string; data?: { to?: string } } }) =>
      frame.event === "workspace.status" &&
      frame.data?.workspaceId === id &&
      frame.data?.data?.to === "online";
    await onB.until(online);
    await onA.until(online);
    onA.close();
    onB.close();
    const mine = (frames: typeof onA.frames) =>
      frames.filter((frame) => frame.data?.workspaceId === id).map((frame) => `${frame.id} ${frame.event}`);
    expect(mine(onB.frames).length).toBeGreaterThan(0);
    expect(mine(onB.frames)).toEqual(mine(onA.frames).slice(0, mine(onB.frames).length));
  });

  it("a client resumes with Last-Event-ID on the other replica and gets exactly what it missed", async () => {
    const first = await openSse(`${a.url}/events`, a.adminToken);
    const id = await createExternal("resumed");
    const token = await register(a, id);
    await heartbeat(a, id, token);
    await first.until((frame) => frame.data?.workspaceId === id && frame.data?.data?.to === "online");
    first.close();
    const lastSeen = first.frames.at(-1)?.id;
    expect(lastSeen).toBeDefined();
    // Missed while disconnected: a heartbeat through A (a batch of them is one event per flush).
    await heartbeat(a, id, token);
    // The same Last-Event-ID on each replica: the same events after it, in the same order, with the same ids.
    const beats = (frames: typeof first.frames) =>
      frames.filter((frame) => frame.event === "workspace.heartbeat" && frame.data?.workspaceId === id)
        .length;
    const throughTheBeat = async (replica: PlatformProcess) => {
      const stream = await openSse(`${replica.url}/events`, replica.adminToken, lastSeen);
      await waitFor("the heartbeat", async () => (beats(stream.frames) >= 1 ? true : undefined), 20_000, 50);
      stream.close();
      expect(stream.frames.some((frame) => frame.event === "reset")).toBe(false);
      const beat = stream.frames.findIndex((_, i) => beats(stream.frames.slice(0, i + 1)) === 1);
      return stream.frames.slice(0, beat + 1).map((frame) => `${frame.id} ${frame.event}`);
    };
    const onA = await throughTheBeat(a);
    const onB = await throughTheBeat(b);
    expect(onB).toEqual(onA);
    expect(onB[0]?.startsWith(`${lastSeen} `)).toBe(false);
  });

  it("a workspace-token stream on B ends with `revoked` as soon as the token is rotated through A", async () => {
    const id = await createExternal("rotated");
    const token = await register(a, id);
    const own = await openSse(`${b.url}/workspaces/${id}/events`, token);
    expect(own.status).toBe(200);
    const rotatedAt = Date.now();
    await register(a, id);
    const frames = await own.ended;
    expect(frames.at(-1)?.event).toBe("revoked");
    // B's only other way to notice is the re-check at its 15 s keepalive: this came from the change feed
    expect(Date.now() - rotatedAt).toBeLessThan(15_000);
  });

  it("the liveness sweep runs on one replica at a time", async () => {
    const id = await createExternal("goes-quiet");
    // A third party holds the sweep's lock: neither replica may sweep, however stale the workspace gets.
    const holder = await createDatabase({ url: database.url, maxConnections: 1 });
    try {
      // The replicas take the lock every 0.3 s for a moment, so the holder may have to try more than once.
      const held = await waitFor("the sweep's lock", async () => {
        const attempt = await holder.withAdvisoryLock(TENANT_LIVENESS_LOCK, async () => {
          await heartbeat(a, id, await register(a, id));
          await new Promise((resolve) => setTimeout(resolve, 3500)); // past HEARTBEAT_STALE_AFTER, several sweeps
          return (await b.call("GET", `/workspaces/${id}`)).body.status;
        });
        return attempt.acquired ? attempt : undefined;
      });
      expect(held).toEqual({ acquired: true, value: "online" });
    } finally {
      await holder.close();
    }
    await waitFor("offline", async () =>
      (await b.call("GET", `/workspaces/${id}`)).body.status === "offline" ? true : undefined,
    );
    // One replica marked it (and logged it), not both. The log line travels through the process's stdout pipe, so it
    // may arrive after the status is visible; a second marking would come within a few sweeps (0.3 s apart).
    const markedBy = () =>
      [a, b].filter((replica) =>
        replica.output().includes(`"workspaceId":"${id}","msg":"workspace went offline: heartbeats stopped"`),
      );
    await waitFor("a replica's log line", async () => (markedBy().length > 0 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(markedBy().length).toBe(1);
  });
});

describe("two control plane replicas on one database", () => {
  let database: TestDatabase;
  let a: ControlPlaneProcess;
  let b: ControlPlaneProcess;

  beforeAll(async () => {
    database = await createTestDatabase({ migrations: CP_MIGRATIONS });
    const env = {
      DATABASE_URL: database.url,
      CP_ADMIN_API_TOKEN: `mca_${randomBytes(16).toString("hex")}`,
      PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
      CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    };
    [a, b] = await Promise.all([startControlPlaneProcess({ env }), startControlPlaneProcess({ env })]);
  });

  afterAll(async () => {
    await killAllPlatformProcesses();
    await database?.drop();
  });

  it("a rollout queued through A is on B's GET /cp/admin/events, and a client resumes there", async () => {
    const onB = await openSse(`${b.url}/cp/admin/events`, b.adminToken);
    expect(onB.status).toBe(200);
    const queued = await a.admin("POST", "/cp/admin/tenants/workspaces/redeploy-fleet", {});
    expect(queued.status, JSON.stringify(queued.body)).toBe(202);
    const rolloutId = queued.body.rollout.id;
    const finished = (frame: { event?: string; data?: { data?: { rolloutId?: string } } }) =>
      frame.event === "rollout.finished" && frame.data?.data?.rolloutId === rolloutId;
    await onB.until(finished);
    onB.close();
    const queuedFrame = onB.frames.find((frame) => frame.event === "rollout.queued");
    expect(queuedFrame?.data?.data?.rolloutId).toBe(rolloutId);
    const resumed = await openSse(`${a.url}/cp/admin/events`, a.adminToken, queuedFrame?.id);
    await resumed.until(finished);
    resumed.close();
    expect(resumed.frames.map((frame) => frame.id)).toEqual(
      onB.frames.slice(onB.frames.indexOf(queuedFrame as never) + 1).map((frame) => frame.id),
    );
  });
});
