/**
 * One org cannot take another org's resource names. On one Docker engine the control plane runs two kinds of
 * containers: workspaces (`ws-<workspace id>`) and tenants (`tenant-<slug>`, volume `tenant-<slug>-data`). A tenant
 * once chose a workspace id equal to another org's tenant container name, so that org's create and delete failed for
 * good. Here, against the real engine with the real docker backends: org beta cannot make anything under org victim's
 * names, by the API or at the provisioner boundary, and victim's create and delete work.
 */
import { randomBytes } from "node:crypto";
import { createIdGenerator } from "@molecule/contracts";
import {
  createDockerClient,
  createDockerProvisioner,
  LABELS,
  ProvisionerError,
} from "@molecule/provisioner-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDockerTenantBackend, tenantContainerName, tenantVolumeName } from "./tenants/docker.ts";
import { createTestControlPlane, type TestControlPlane, workspaceSpec } from "./testing.ts";

const docker = createDockerClient();
const suffix = randomBytes(3).toString("hex");
const deployment = `cp-squat-${suffix}`;
const victimSlug = `victim-${suffix}`;
const betaSlug = `beta-${suffix}`;
const ids = createIdGenerator();
let cp: TestControlPlane;

async function exists(kind: "container" | "volume", name: string): Promise<boolean> {
  try {
    if (kind === "container") await docker.getContainer(name).inspect();
    else await docker.getVolume(name).inspect();
    return true;
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return false;
    throw error;
  }
}

async function cleanup(): Promise<void> {
  const filters = { label: [`${LABELS.deployment}=${deployment}`] };
  for (const c of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(c.Id).remove({ force: true });
  }
  for (const v of (await docker.listVolumes({ filters })).Volumes ?? [])
    await docker.getVolume(v.Name).remove();
}

beforeAll(async () => {
  await docker.getImage("molecule/tenant-platform:latest").inspect(); // built by the global setup
  cp = await createTestControlPlane({
    provisioner: createDockerProvisioner({
      docker,
      deployment,
      imagePrefix: "molecule/workspace-",
      imageTag: "latest",
      network: "bridge",
    }),
    tenants: createDockerTenantBackend({
      docker,
      image: "molecule/tenant-platform:latest",
      network: "bridge",
      deployment,
    }),
    settings: { deployment },
  });
});
afterAll(async () => {
  await cp?.close();
  await cleanup();
});

async function deleteOrg(slug: string): Promise<void> {
  expect((await cp.admin("DELETE", `/cp/orgs/${slug}`, { confirm: slug })).status).toBe(202);
  await cp.runner.drain();
  const shown = await cp.admin("GET", `/cp/orgs/${slug}`);
  expect(shown.body.org.status, shown.text).toBe("deleted");
}

describe("resource names across orgs", { timeout: 180_000 }, () => {
  it("org beta cannot create anything under org victim's tenant names; victim's create and delete work", async () => {
    const beta = await cp.createOrg(betaSlug);
    await cp.runner.drain();
    const victimNames = [tenantContainerName(victimSlug), tenantVolumeName(victimSlug)];

    for (const name of victimNames) {
      // Through the API: a workspace id must be a minted id.
      const reply = await cp.tenant(beta, "POST", "/cp/workspaces/provision", { body: workspaceSpec(name) });
      expect(reply.status, reply.text).toBe(400);
      expect(reply.body.error.code).toBe("bad_request");
      // At the provisioner boundary, whatever the caller: no engine call is made for it.
      const error = await cp.deps.provisioner
        .provision(
          {
            workspaceId: name,
            orgId: beta.orgId,
            deployment,
            runtime: "echo",
            tier: 2,
            env: {},
            secretKeys: [],
            metadata: {},
          },
          null,
        )
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ProvisionerError);
      expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    }
    await cp.runner.drain();
    for (const name of victimNames) {
      expect(await exists("container", name), name).toBe(false);
      expect(await exists("volume", name), name).toBe(false);
    }

    const victim = await cp.createOrg(victimSlug);
    await cp.runner.drain();
    const created = await cp.admin("GET", `/cp/orgs/${victimSlug}`);
    expect(created.body.operation, created.text).toMatchObject({
      kind: "provision_tenant",
      status: "succeeded",
    });
    const container = await docker.getContainer(tenantContainerName(victimSlug)).inspect();
    expect(container.Config.Labels).toMatchObject({ [LABELS.orgId]: victim.orgId, [LABELS.kind]: "tenant" });
    expect(await exists("volume", tenantVolumeName(victimSlug))).toBe(true);

    // Beta's own workspaces still work beside it, under their own names.
    const workspaceId = ids.next("ws");
    expect(
      (await cp.tenant(beta, "POST", "/cp/workspaces/provision", { body: workspaceSpec(workspaceId) }))
        .status,
    ).toBe(202);
    await cp.runner.drain();
    expect(await exists("container", `ws-${workspaceId.slice(3)}`)).toBe(true);

    await deleteOrg(victimSlug);
    for (const name of victimNames) {
      expect(await exists("container", name), name).toBe(false);
      expect(await exists("volume", name), name).toBe(false);
    }
    await deleteOrg(betaSlug);
    expect(await exists("container", `ws-${workspaceId.slice(3)}`)).toBe(false);
    expect(await exists("container", tenantContainerName(betaSlug))).toBe(false);
  });
});
