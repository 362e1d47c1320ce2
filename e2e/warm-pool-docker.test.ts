import { randomBytes } from "node:crypto";
import { operations, poolMembers } from "@molecule/db";
import { LABELS, resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDockerTestPlatform,
  removeDeployment,
  statusBecomes as statusBecomesOf,
} from "../test-support/docker-platform.ts";
import { errorOf, type TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = `e2e-pool-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment });
  await platform.listen();
});

afterAll(async () => {
  await platform.close();
  await removeDeployment(docker, deployment);
});

const statusBecomes = (id: string, status: string) => statusBecomesOf(platform, docker, id, status);

async function poolOf(runtime: string, tier: number) {
  const { body } = await platform.call("GET", "/pools");
  return body.pools.find(
    (pool: { runtime: string; tier: number }) => pool.runtime === runtime && pool.tier === tier,
  );
}

/** Waits until the pool's counts are these (ready, starting). */
function poolSettles(runtime: string, tier: number, ready: number, starting = 0) {
  return waitFor(
    `pool ${runtime}/${tier} to have ${ready} ready and ${starting} starting`,
    async () => {
      const pool = await poolOf(runtime, tier);
      return pool?.ready === ready && pool.starting === starting ? pool : undefined;
    },
    120_000,
  );
}

/** The deployment's containers labelled as members of `pool`, by workspace id. */
async function poolContainers(pool: string) {
  const containers = await docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.deployment}=${deployment}`, `${LABELS.pool}=${pool}`] },
  });
  return containers.map((c) => c.Labels[LABELS.workspaceId] as string).sort();
}

async function envOf(workspaceId: string): Promise<Map<string, string>> {
  const container = await docker.getContainer(resourceName(workspaceId)).inspect();
  return new Map(container.Config.Env.map((entry) => entry.split(/=(.*)/s).slice(0, 2) as [string, string]));
}

async function readyMemberIds(): Promise<string[]> {
  const rows = await platform.database.db
    .select({ id: poolMembers.id })
    .from(poolMembers)
    .where(eq(poolMembers.state, "ready"));
  return rows.map((row) => row.id).sort();
}

describe("warm pools on the real Docker engine", () => {
  it("PUT /pools refuses bad targets with a 4xx and changes nothing; only the admin sets or reads pools", async () => {
    const bad: [unknown, string][] = [
      [{ runtime: "echo", tier: 2 }, "size"],
      [{ runtime: "echo", tier: 2, size: -1 }, "size"],
      [{ runtime: "echo", tier: 2, size: 51 }, "size"],
      [{ runtime: "echo", tier: 2, size: 1.5 }, "size"],
      [{ runtime: "echo", tier: 7, size: 1 }, "tier"],
      [{ runtime: "Not An Image", tier: 2, size: 1 }, "runtime"],
      [{ runtime: "echo", tier: 2, size: 1, extra: true }, "extra"],
      [{ runtime: "nosuchruntime", tier: 2, size: 1 }, "nosuchruntime"],
      [{ runtime: "external", tier: 2, size: 1 }, "external"],
      ["not json", "JSON"],
    ];
    for (const [body, mentions] of bad) {
      const answer = await platform.call("PUT", "/pools", { body });
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(errorOf(answer).code).toBe("bad_request");
      expect(errorOf(answer).message).toContain(mentions);
    }
    expect(
      (await platform.call("PUT", "/pools", { token: null, body: { runtime: "echo", tier: 2, size: 1 } }))
        .status,
    ).toBe(401);
    expect((await platform.call("GET", "/pools", { token: "mwt_not-a-token" })).status).toBe(401);
    expect((await platform.call("GET", "/pools")).body).toEqual({ pools: [] });
    expect(await poolContainers("echo-t2")).toEqual([]);
  });

  it("fills a pool with labelled members whose agents wait; the reconciler counts them and calls none an orphan", async () => {
    const put = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 5 } });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ runtime: "echo", tier: 2, size: 5, claimed: 0 });
    await poolSettles("echo", 2, 5);
    const members = await readyMemberIds();
    expect(await poolContainers("echo-t2")).toEqual(members);
    for (const id of members) {
      const env = await envOf(id);
      expect(env.get("WORKSPACE_ID")).toBe(id);
      expect(env.get("WORKSPACE_POOL_TOKEN")).toMatch(/^mpt_/);
      // No boot token: a member is nobody's until claimed, and nothing but its claim wait accepts its pool token.
      expect(env.has("WORKSPACE_BOOT_TOKEN")).toBe(false);
    }
    const report = (await platform.call("POST", "/admin/reconcile")).body;
    expect(report.orphans).toBe(0);
    expect(report.resources.byPool).toEqual({ "echo-t2": 5 });
    const stats = (await platform.call("GET", "/admin/stats")).body;
    expect(stats.pools).toEqual([expect.objectContaining({ runtime: "echo", tier: 2, size: 5, ready: 5 })]);
  }, 180_000);

  it("10 concurrent creates against a pool of 5: 5 claim distinct members, 5 provision cold, all come online; the pool refills", async () => {
    const before = await readyMemberIds();
    expect(before).toHaveLength(5);
    const secretOf = (i: number) => `secret-value-${i}-${randomBytes(8).toString("hex")}`;
    const secrets = Array.from({ length: 10 }, (_, i) => secretOf(i));
    const created = await Promise.all(
      secrets.map((value, i) =>
        platform.call("POST", "/workspaces", {
          body: {
            name: `pooled-${i}`,
            runtime: "echo",
            tier: 2,
            secrets: { MY_SECRET: value },
            metadata: { i },
          },
        }),
      ),
    );
    for (const answer of created) expect(answer.status).toBe(202);
    const ids: string[] = created.map((answer) => answer.body.workspace.id);
    expect(new Set(ids).size).toBe(10);
    const claimed = created.filter((answer) => answer.body.workspace.status === "awaiting_agent");
    const cold = created.filter((answer) => answer.body.workspace.status === "provisioning");
    expect(claimed).toHaveLength(5);
    expect(cold).toHaveLength(5);
    // Each claim took one of the ready members, and no member twice.
    expect(claimed.map((answer) => answer.body.workspace.id).sort()).toEqual(before);
    for (const answer of claimed) expect(answer.body.operation.steps[0].name).toBe("pool_member_claimed");
    const claimedRows = await platform.database.db
      .select()
      .from(poolMembers)
      .where(eq(poolMembers.state, "claimed"));
    expect(claimedRows.map((row) => row.id).sort()).toEqual(before);

    const online = await Promise.all(ids.map((id) => statusBecomes(id, "online")));
    for (const [i, workspace] of online.entries()) {
      expect(workspace.name).toBe(`pooled-${i}`);
      expect(workspace.metadata).toEqual({ i });
    }

    // A claimed member's container never held anyone's secret: its agent pulled its own with its own token.
    for (const answer of claimed) {
      const env = await envOf(answer.body.workspace.id);
      const text = [...env.values()].join("\n");
      for (const value of secrets) expect(text).not.toContain(value);
    }
    // Each member's pool token is good for its own claim wait only: not another member's, not any workspace route.
    const [first, second] = claimed.map((answer) => answer.body.workspace.id as string);
    const firstToken = (await envOf(first as string)).get("WORKSPACE_POOL_TOKEN");
    const otherClaim = await platform.callServed("POST", "/registry/claim", {
      token: firstToken,
      body: { id: second, wait_seconds: 0 },
    });
    expect(otherClaim.status).toBe(401);
    expect(JSON.stringify(otherClaim.body)).not.toMatch(/mbt_|secret-value/);
    const ownClaim = await platform.callServed("POST", "/registry/claim", {
      token: firstToken,
      body: { id: first, wait_seconds: 0 },
    });
    // Its boot token was spent when its agent registered: the claim is not handed out again.
    expect(ownClaim.status).toBe(409);
    expect(JSON.stringify(ownClaim.body)).not.toMatch(/mbt_|secret-value/);
    const secretValues = await platform.callServed("GET", `/workspaces/${second}/secrets/values`, {
      token: firstToken,
    });
    expect(secretValues.status).toBe(401);
    const logs = platform.logs.join("");
    for (const value of secrets) expect(logs).not.toContain(value);
    expect(logs).not.toContain(firstToken);

    // Through the proxy, a claimed workspace answers as any other.
    const reply = await platform.call("POST", `/workspaces/${first}/a2a`, {
      body: {
        jsonrpc: "2.0",
        id: 1,
        method: "message/send",
        params: { message: { role: "user", messageId: "m1", parts: [{ kind: "text", text: "warm" }] } },
      },
    });
    expect(JSON.stringify(reply.body)).toContain("echo: warm");

    // The pool refills with new members; the claimed ones are workspaces now, counted as claimed.
    const refilled = await poolSettles("echo", 2, 5);
    expect(refilled.claimed).toBe(5);
    const after = await readyMemberIds();
    expect(after.filter((id) => ids.includes(id))).toEqual([]);

    // The claimed workspaces' provision operations are recorded done, the cold ones by the runner.
    const provisions = await platform.database.db
      .select()
      .from(operations)
      .where(inArray(operations.workspaceId, ids));
    expect(provisions.every((operation) => operation.status === "succeeded")).toBe(true);

    for (const id of ids) expect((await platform.call("DELETE", `/workspaces/${id}`)).status).toBe(202);
    await Promise.all(ids.map((id) => statusBecomes(id, "removed")));
    expect((await poolOf("echo", 2)).claimed).toBe(0);
  }, 300_000);

  it("a shrink destroys the surplus members and size 0 drains the pool; nothing of the deployment is left", async () => {
    await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } });
    await poolSettles("echo", 2, 2);
    const kept = await readyMemberIds();
    // The surplus is marked first, then destroyed: its containers go shortly after the counts say 2.
    await waitFor("the surplus members' containers to be gone", async () =>
      JSON.stringify(await poolContainers("echo-t2")) === JSON.stringify(kept) ? true : undefined,
    );
    const volumes = await docker.listVolumes({
      filters: { label: [`${LABELS.deployment}=${deployment}`, `${LABELS.pool}=echo-t2`] },
    });
    expect(volumes.Volumes?.map((volume) => volume.Labels?.[LABELS.workspaceId]).sort()).toEqual(kept);

    await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
    await poolSettles("echo", 2, 0);
    // Containers and volumes both: a member's destroy removes its container, then its volume.
    await waitFor("the drained members' containers and volumes to be gone", async () => {
      const containers = await docker.listContainers({
        all: true,
        filters: { label: [`${LABELS.deployment}=${deployment}`] },
      });
      const volumes = await docker.listVolumes({
        filters: { label: [`${LABELS.deployment}=${deployment}`] },
      });
      return containers.length + (volumes.Volumes ?? []).length === 0 ? true : undefined;
    });
    // A member's row goes once its resources are destroyed.
    await waitFor("the drained members' rows to be gone", async () => {
      const rows = await platform.database.db.select().from(poolMembers);
      return rows.every((row) => row.state === "claimed") ? true : undefined;
    });
    expect((await platform.call("GET", "/pools")).body.pools).toEqual([
      expect.objectContaining({ runtime: "echo", tier: 2, size: 0, ready: 0, starting: 0 }),
    ]);
  }, 180_000);
});
