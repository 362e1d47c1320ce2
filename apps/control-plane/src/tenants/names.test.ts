/**
 * Names on the shared Docker engine: a tenant's (`tenant-<slug>`, `tenant-<slug>-data`) and a workspace's
 * (`ws-<workspace id>`) come only from checked slugs and minted ids, and can never be equal.
 */
import { createIdGenerator, OrgSlug } from "@molecule/contracts";
import { createDockerClient, ProvisionerError, resourceName } from "@molecule/provisioner-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type FakeEngine,
  startFakeEngine,
} from "../../../../packages/provisioner-core/src/docker/test-support.ts";
import { HOSTILE_WORKSPACE_IDS } from "../../../../test-support/hostile-ids.ts";
import { createDockerTenantBackend, tenantContainerName, tenantVolumeName } from "./docker.ts";

const ids = createIdGenerator();

/** Valid slugs chosen to look like other names: a workspace's, another tenant's, its volume's. */
const LOOKALIKE_SLUGS = [
  "ws-abc",
  "ws-0000000000aaaaaaaaaaaaaaaa",
  "tenant-victim",
  "victim",
  "victim-data",
  "data",
  "abc",
  `a${"b".repeat(38)}c`,
];

let engine: FakeEngine;
beforeAll(async () => {
  engine = await startFakeEngine();
});
afterAll(() => engine.close());

describe("tenant and workspace names", () => {
  it("a tenant's names and a workspace's names never collide", () => {
    const workspaceNames = new Set(Array.from({ length: 200 }, () => resourceName(ids.next("ws"))));
    workspaceNames.add(resourceName(`ws_${"0".repeat(26)}`));
    for (const slug of LOOKALIKE_SLUGS) {
      expect(OrgSlug.safeParse(slug).success, slug).toBe(true);
      for (const name of [tenantContainerName(slug), tenantVolumeName(slug)]) {
        expect(name.startsWith("tenant-")).toBe(true);
        expect(workspaceNames.has(name), name).toBe(false);
      }
    }
    // Why it holds: every workspace name is `ws-` and 26 characters, every tenant name starts with `tenant-`.
    for (const name of workspaceNames) expect(name).toMatch(/^ws-[0-9a-z]{26}$/);
    // The one equality across slugs is across kinds, which the engine keeps apart (org "victim-data"'s container and
    // org "victim"'s volume); within a kind, distinct slugs give distinct names.
    expect(tenantContainerName("victim-data")).toBe(tenantVolumeName("victim"));
    expect(tenantVolumeName("victim-data")).not.toBe(tenantVolumeName("victim"));
  });

  it("a slug OrgSlug refuses never becomes a name, and the tenant backend never asks the engine about it", async () => {
    const backend = createDockerTenantBackend({
      docker: createDockerClient({ host: "127.0.0.1", port: engine.port, protocol: "http" }),
      image: "molecule/tenant-platform:latest",
      network: "molecule",
      deployment: "test-names",
    });
    const orgId = ids.next("org");
    for (const slug of [...HOSTILE_WORKSPACE_IDS, "UPPER", "ab", "-abc", "abc-", `a${"b".repeat(40)}`]) {
      if (OrgSlug.safeParse(slug).success) continue;
      expect(() => tenantContainerName(slug), slug).toThrow(ProvisionerError);
      expect(() => tenantVolumeName(slug), slug).toThrow(ProvisionerError);
      const spec = { orgId, slug, deployment: "test-names", env: {}, secretKeys: [], isCanary: false };
      for (const call of [
        () => backend.provision(spec, null),
        () => backend.destroy({ orgId, slug, handle: null }),
        () => backend.status({ orgId, slug, handle: null }),
      ]) {
        await expect(call(), slug).rejects.toMatchObject({ code: "invalid_spec", retryable: false });
      }
    }
    expect(engine.requests).toEqual([]);
  });
});
