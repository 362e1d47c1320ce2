/**
 * Workspace redeploys on the real Docker engine with the image the global setup built: a redeploy rebuilds the
 * workspace's container on the current image, keeps its volume (the agent's bearer token lives there, so the agent
 * keeps its identity without registering a new token), and its operation ends only once the agent is online again.
 *
 * Then the control plane's rollouts over real tenant platforms (in process, each serving its API over loopback HTTP
 * with the org id and admin token the control plane minted for it): one tenant's workspaces, a dry run that changes
 * nothing, a canary that goes offline during the soak, a rollout cancelled during its soak.
 */
import { randomBytes } from "node:crypto";
import { workspaceTokens } from "@molecule/db";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpOrgs, cpRollouts } from "../apps/control-plane/src/db/schema.ts";
import {
  ADMIN_TOKEN as CP_ADMIN_TOKEN,
  createTestControlPlane,
  realClock,
  type TestControlPlane,
} from "../apps/control-plane/src/testing.ts";
import {
  createDockerTestPlatform,
  removeDeployment,
  statusBecomes as statusBecomesOf,
} from "../test-support/docker-platform.ts";
import type { TestPlatform } from "../test-support/platform.ts";
import { waitFor } from "../test-support/wait.ts";

const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
let platform: TestPlatform;
let cp: TestControlPlane;
/** The tenant platforms the control plane reaches, by org slug, with the admin token it minted for each. */
const tenants = new Map<string, { platform: TestPlatform; token: string }>();

beforeAll(async () => {
  platform = await createDockerTestPlatform({ docker, deployment });
  await platform.listen();
  cp = await createTestControlPlane({ clock: realClock });
  cp.rollouts.start();
});

afterAll(async () => {
  await cp?.close();
  for (const tenant of tenants.values()) await tenant.platform.close();
  await platform?.close();
  await removeDeployment(docker, deployment);
});

/** An org on the control plane and its tenant platform on Docker, ready, reachable at its URL. */
async function tenantFor(slug: string) {
  const created = await cp.admin("POST", "/cp/orgs", { slug, name: `Org ${slug}` });
  expect(created.status).toBe(201);
  const orgId: string = created.body.org.id;
  const token: string = created.body.tenant_admin_token;
  const tenant = await createDockerTestPlatform({
    docker,
    deployment,
    settings: { orgId, adminToken: token },
  });
  const url = await tenant.listen();
  await cp.deps.db.update(cpOrgs).set({ status: "ready", tenantUrl: url }).where(eq(cpOrgs.id, orgId));
  tenants.set(slug, { platform: tenant, token });
  return tenant;
}

/** The tenant's own admin API, with its own token. */
function tenantCall(slug: string, method: string, path: string, body?: unknown) {
  const tenant = tenants.get(slug);
  if (!tenant) throw new Error(`no tenant ${slug}`);
  return tenant.platform.call(method, path, { token: tenant.token, ...(body === undefined ? {} : { body }) });
}

/** A workspace on `slug`'s tenant, online. */
async function onlineWorkspace(slug: string, name: string): Promise<string> {
  const created = await tenantCall(slug, "POST", "/workspaces", { name, runtime: "echo" });
  expect(created.status).toBe(202);
  const id: string = created.body.workspace.id;
  await waitFor(`${slug} workspace ${name} online`, async () =>
    (await tenantCall(slug, "GET", `/workspaces/${id}`)).body.status === "online" ? true : undefined,
  );
  return id;
}

async function operationKinds(slug: string, workspaceId: string): Promise<string[]> {
  const listed = await tenantCall(slug, "GET", `/workspaces/${workspaceId}/operations`);
  return listed.body.operations.map((operation: { kind: string }) => operation.kind);
}

async function rolloutEnds(id: string) {
  return waitFor(
    `rollout ${id} to end`,
    async () => {
      const { rollout } = (await cp.admin("GET", `/cp/admin/rollouts/${id}`)).body;
      return ["succeeded", "failed", "cancelled"].includes(rollout.status) ? rollout : undefined;
    },
    180_000,
  );
}

async function soakStarted(id: string) {
  await waitFor(
    `rollout ${id} to begin its soak`,
    async () => {
      const { rollout } = (await cp.admin("GET", `/cp/admin/rollouts/${id}`)).body;
      if (rollout.status !== "running" && rollout.status !== "pending")
        throw new Error(JSON.stringify(rollout));
      return rollout.steps.some((step: { name: string }) => step.name === "soak_started") ? true : undefined;
    },
    120_000,
  );
}

/** Reads the control plane's event stream in the background; `stop` ends it and answers the events seen. */
async function watchEvents() {
  const response = await cp.app.request("/cp/admin/events", {
    headers: { authorization: `Bearer ${CP_ADMIN_TOKEN}` },
  });
  expect(response.status).toBe(200);
  const reader = response.body?.getReader();
  if (!reader) throw new Error("the event stream has no body");
  let text = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += decoder.decode(value, { stream: true });
    }
  })();
  const events = () =>
    [...text.matchAll(/^event: (.+)\ndata: (.+)$/gm)].map((match) => ({
      type: match[1] ?? "",
      data: JSON.parse(match[2] ?? "{}").data as Record<string, unknown>,
    }));
  return {
    events,
    async stop() {
      await reader.cancel();
      await reading.catch(() => {});
      return events();
    },
  };
}

const statusBecomes = (id: string, status: string) => statusBecomesOf(platform, docker, id, status);

async function authTokenHashes(id: string) {
  const rows = await platform.database.db
    .select()
    .from(workspaceTokens)
    .where(eq(workspaceTokens.workspaceId, id));
  return rows.filter((row) => row.kind === "auth").map((row) => row.tokenHash);
}

/** When the engine made the workspace's volume: the same value after a rebuild means the same volume. */
async function volumeCreatedAt(id: string): Promise<string> {
  const volume = (await docker.getVolume(resourceName(id)).inspect()) as unknown as { CreatedAt: string };
  return volume.CreatedAt;
}

async function operationEnds(id: string) {
  return waitFor(`operation ${id} to end`, async () => {
    const operation = (await platform.call("GET", `/operations/${id}`)).body;
    return operation.status === "succeeded" || operation.status === "failed" ? operation : undefined;
  });
}

describe("POST /workspaces/:id/redeploy on the docker backend", () => {
  it("rebuilds the container on the current image, keeps the volume and the agent's token, ends online", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "redeploy", runtime: "echo" },
    });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    await statusBecomes(id, "online");
    const before = await docker.getContainer(resourceName(id)).inspect();
    const volumeBefore = await volumeCreatedAt(id);
    const tokensBefore = await authTokenHashes(id);
    expect(tokensBefore).toHaveLength(1);

    const accepted = await platform.call("POST", `/workspaces/${id}/redeploy`);
    expect(accepted.status).toBe(202);
    expect(accepted.body.operation.kind).toBe("redeploy");
    expect(accepted.body.workspace.status).toBe("stopping");
    const operation = await operationEnds(accepted.body.operation.id);
    expect(operation.status, JSON.stringify(operation.error)).toBe("succeeded");
    const steps: string[] = operation.steps.map((step: { name: string }) => step.name);
    expect(steps).toContain("container_removed");
    expect(steps).toContain("image");
    // The operation's last step is the agent back online, and the workspace says so as it ends.
    expect(steps.at(-1)).toBe("agent_online");
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");

    const after = await docker.getContainer(resourceName(id)).inspect();
    expect(after.Id).not.toBe(before.Id);
    expect(after.Config.Image).toBe(before.Config.Image);
    expect(after.State.Running).toBe(true);
    expect(await volumeCreatedAt(id)).toBe(volumeBefore);
    // The agent found its bearer token on the kept volume: no new registration token was spent on a new identity.
    expect(await authTokenHashes(id)).toEqual(tokensBefore);

    // A stopped workspace is not redeployed (start it instead): 409 with the envelope, nothing queued.
    expect((await platform.call("POST", `/workspaces/${id}/stop`)).status).toBe(202);
    await statusBecomes(id, "stopped");
    const refused = await platform.call("POST", `/workspaces/${id}/redeploy`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: "invalid_transition" });
    expect(refused.body.error.requestId).toBeTruthy();

    await platform.call("DELETE", `/workspaces/${id}`);
    await statusBecomes(id, "removed");
  }, 180_000);
});

describe("the control plane redeploys one tenant's workspaces through the tenant's API", () => {
  it("dry run lists what would happen and changes nothing; the rollout rebuilds the online one, skips the stopped", async () => {
    await tenantFor("solo");
    const live = await onlineWorkspace("solo", "live");
    const parked = await onlineWorkspace("solo", "parked");
    expect((await tenantCall("solo", "POST", `/workspaces/${parked}/stop`)).status).toBe(202);
    await waitFor("parked stopped", async () =>
      (await tenantCall("solo", "GET", `/workspaces/${parked}`)).body.status === "stopped" ? true : undefined,
    );
    const containerBefore = await docker.getContainer(resourceName(live)).inspect();
    const volumeBefore = await volumeCreatedAt(live);
    const kindsBefore = await operationKinds("solo", live);

    const dry = await cp.admin("POST", "/cp/admin/tenants/solo/workspaces/redeploy", { dry_run: true });
    expect(dry.status).toBe(200);
    expect(dry.body.rollout).toMatchObject({ id: null, dry_run: true, scope: "tenant", status: "pending" });
    expect(dry.body.rollout.tenants).toHaveLength(1);
    const planned = dry.body.rollout.tenants[0].workspaces;
    expect(planned).toEqual([
      { id: live, name: "live", status: "online", outcome: "redeploy" },
      {
        id: parked,
        name: "parked",
        status: "stopped",
        outcome: "skipped",
        reason: "it is stopped, not online",
      },
    ]);
    expect(await cp.deps.db.select().from(cpRollouts)).toEqual([]);
    expect(await operationKinds("solo", live)).toEqual(kindsBefore);
    expect((await docker.getContainer(resourceName(live)).inspect()).Id).toBe(containerBefore.Id);

    const stream = await watchEvents();
    const accepted = await cp.admin("POST", "/cp/admin/tenants/solo/workspaces/redeploy");
    expect(accepted.status).toBe(202);
    const rollout = await rolloutEnds(accepted.body.rollout.id);
    expect(rollout.status, JSON.stringify(rollout.error)).toBe("succeeded");
    const [solo] = rollout.tenants;
    expect(solo).toMatchObject({ slug: "solo", status: "succeeded", error: null });
    const [redeployed, skipped] = solo.workspaces;
    expect(redeployed).toMatchObject({ id: live, outcome: "redeployed" });
    expect(skipped).toMatchObject({ id: parked, outcome: "skipped" });

    // On the tenant: one redeploy operation, succeeded, the agent back online on a new container and the same volume.
    const operation = (await tenantCall("solo", "GET", `/operations/${redeployed.operation_id}`)).body;
    expect(operation).toMatchObject({ kind: "redeploy", status: "succeeded", workspaceId: live });
    expect(await operationKinds("solo", live)).toEqual(["redeploy", ...kindsBefore]);
    expect(await operationKinds("solo", parked)).not.toContain("redeploy");
    expect((await tenantCall("solo", "GET", `/workspaces/${live}`)).body.status).toBe("online");
    expect((await docker.getContainer(resourceName(live)).inspect()).Id).not.toBe(containerBefore.Id);
    expect(await volumeCreatedAt(live)).toBe(volumeBefore);
    expect((await tenantCall("solo", "GET", `/workspaces/${parked}`)).body.status).toBe("stopped");

    // Live on the control plane's event stream: the workspace, the tenant and the rollout's end.
    const seen = await waitFor("the rollout's end on the event stream", async () => {
      const events = stream.events();
      return events.some((event) => event.type === "rollout.finished") ? events : undefined;
    });
    await stream.stop();
    const ofRollout = seen.filter((event) => event.data.rolloutId === rollout.id);
    expect(ofRollout.map((event) => event.type)).toEqual(
      expect.arrayContaining(["rollout.step", "rollout.tenant", "rollout.workspace", "rollout.finished"]),
    );
    expect(ofRollout.find((event) => event.type === "rollout.finished")?.data.status).toBe("succeeded");
    expect(
      ofRollout.some((event) => event.type === "rollout.workspace" && event.data.outcome === "redeployed"),
    ).toBe(true);
  }, 240_000);
});

describe("a fleet rollout with a canary", () => {
  it("a canary that goes offline during the soak stops the rollout before any other tenant is touched", async () => {
    await tenantFor("canary-a");
    await tenantFor("other-b");
    const canaryWorkspace = await onlineWorkspace("canary-a", "canary");
    const otherWorkspace = await onlineWorkspace("other-b", "other");
    const othersBefore = {
      solo: await Promise.all(
        (await tenantCall("solo", "GET", "/workspaces")).body.workspaces.map((ws: { id: string }) =>
          operationKinds("solo", ws.id),
        ),
      ),
      other: await operationKinds("other-b", otherWorkspace),
    };

    const dry = await cp.admin("POST", "/cp/admin/tenants/workspaces/redeploy-fleet", {
      canary_slugs: ["canary-a"],
      batch_size: 1,
      soak_seconds: 600,
      dry_run: true,
    });
    expect(dry.status).toBe(200);
    expect(
      dry.body.rollout.tenants.map((tenant: { slug: string; phase: string }) => [tenant.slug, tenant.phase]),
    ).toEqual([
      ["canary-a", "canary"],
      ["other-b", "batch 1"],
      ["solo", "batch 2"],
    ]);
    expect(await cp.deps.db.select().from(cpRollouts)).toHaveLength(1);

    const accepted = await cp.admin("POST", "/cp/admin/tenants/workspaces/redeploy-fleet", {
      canary_slugs: ["canary-a"],
      batch_size: 1,
      soak_seconds: 600,
    });
    expect(accepted.status).toBe(202);
    const id: string = accepted.body.rollout.id;
    await soakStarted(id);
    // The canary's rebuilt agent dies during the soak: its tenant's liveness sweep marks it offline.
    await docker.getContainer(resourceName(canaryWorkspace)).kill({ signal: "SIGKILL" });

    const rollout = await rolloutEnds(id);
    expect(rollout.status).toBe("failed");
    expect(rollout.error.message).toContain(
      `canary canary-a during the soak: workspace ${canaryWorkspace} is offline`,
    );
    expect(rollout.error.message).toContain("2 tenant(s) not started");
    const byslug = Object.fromEntries(
      rollout.tenants.map((tenant: { slug: string }) => [tenant.slug, tenant]),
    );
    expect(byslug["canary-a"]).toMatchObject({ status: "failed" });
    expect(byslug["canary-a"].workspaces).toMatchObject([{ id: canaryWorkspace, outcome: "redeployed" }]);
    expect(byslug["other-b"]).toMatchObject({ status: "pending", workspaces: [] });
    expect(byslug.solo).toMatchObject({ status: "pending", workspaces: [] });
    expect(rollout.steps.map((step: { name: string }) => step.name)).not.toContain("soak_passed");
    // No other tenant was touched: the same operations as before on every one of their workspaces.
    expect(await operationKinds("other-b", otherWorkspace)).toEqual(othersBefore.other);
    expect(
      await Promise.all(
        (await tenantCall("solo", "GET", "/workspaces")).body.workspaces.map((ws: { id: string }) =>
          operationKinds("solo", ws.id),
        ),
      ),
    ).toEqual(othersBefore.solo);
  }, 300_000);

  it("a rollout cancelled during its soak ends cancelled and leaves the other tenants untouched", async () => {
    const [canaryWorkspace] = (await tenantCall("canary-a", "GET", "/workspaces")).body.workspaces.map(
      (ws: { id: string }) => ws.id,
    );
    expect((await tenantCall("canary-a", "POST", `/workspaces/${canaryWorkspace}/restart`)).status).toBe(202);
    await waitFor("the canary back online", async () =>
      (await tenantCall("canary-a", "GET", `/workspaces/${canaryWorkspace}`)).body.status === "online"
        ? true
        : undefined,
    );
    const otherWorkspace = (await tenantCall("other-b", "GET", "/workspaces")).body.workspaces[0].id;
    const otherBefore = await operationKinds("other-b", otherWorkspace);

    const accepted = await cp.admin("POST", "/cp/admin/tenants/workspaces/redeploy-fleet", {
      canary_slugs: ["canary-a"],
      soak_seconds: 600,
    });
    expect(accepted.status).toBe(202);
    const id: string = accepted.body.rollout.id;
    await soakStarted(id);
    const cancel = await cp.admin("POST", `/cp/admin/rollouts/${id}/cancel`);
    expect(cancel.status).toBe(202);
    expect(cancel.body.rollout.cancel_requested).toBe(true);

    const rollout = await rolloutEnds(id);
    expect(rollout).toMatchObject({ status: "cancelled", error: { code: "cancelled" } });
    const byslug = Object.fromEntries(
      rollout.tenants.map((tenant: { slug: string }) => [tenant.slug, tenant]),
    );
    expect(byslug["canary-a"].status).toBe("succeeded");
    expect(byslug["other-b"].status).toBe("pending");
    expect(await operationKinds("other-b", otherWorkspace)).toEqual(otherBefore);
    expect((await cp.admin("POST", `/cp/admin/rollouts/${id}/cancel`)).status).toBe(409);
  }, 300_000);
});
