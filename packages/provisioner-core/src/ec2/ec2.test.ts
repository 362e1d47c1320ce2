/**
 * The EC2 workspace backend's shape on moto: sizes per tier (clamped, hermes' disk), the agent port's sources, the
 * agent address in the handle, no secret in user-data or tags, suspend's fallback, recreate and status.
 */
import {
  CreateSecurityGroupCommand,
  DescribeImagesCommand,
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  DescribeVolumesCommand,
} from "@aws-sdk/client-ec2";
import { GetSecretValueCommand } from "@aws-sdk/client-secrets-manager";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProvisionerError } from "../errors.ts";
import type { WorkspaceSpec } from "../provisioner.ts";
import { ec2Size } from "../tiers.ts";
import { AwsAccess } from "./aws.ts";
import { createEc2Provisioner, type Ec2Handle } from "./provisioner.ts";
import { ensureOrgWorkspacesGroup } from "./security-group.ts";
import { EC2_TAGS, ownerTags } from "./tags.ts";
import {
  type Ec2Harness,
  startEc2Harness,
  TEST_BOOT_TOKEN,
  TEST_SCOPE,
  testProvisionerOptions,
} from "./testkit.ts";

let h: Ec2Harness;

beforeAll(async () => {
  h = await startEc2Harness({ provisioner: { orgSlug: () => "acme" } });
}, 120_000);
afterAll(async () => {
  await h?.close();
});

const aws = () => h.provisioner.vms.aws;
const ref = (spec: WorkspaceSpec, handle: Ec2Handle | null = null) => ({
  workspaceId: spec.workspaceId,
  orgId: spec.orgId,
  handle,
});

async function volumeOf(instanceId: string) {
  const reply = await aws().ec2.send(
    new DescribeVolumesCommand({ Filters: [{ Name: "attachment.instance-id", Values: [instanceId] }] }),
  );
  return reply.Volumes?.[0];
}

async function userDataOf(instanceId: string): Promise<string> {
  const reply = await aws().ec2.send(
    new DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: "userData" }),
  );
  return Buffer.from(reply.UserData?.Value ?? "", "base64").toString("utf8");
}

describe("sizes", () => {
  it("maps tiers 3 and 4, clamps anything else to 4, and gives hermes at least 50 GB", () => {
    expect(ec2Size(3, "echo")).toEqual({ instanceType: "t3.medium", volumeGb: 40, tier: 3, clamped: false });
    expect(ec2Size(4, "echo")).toEqual({ instanceType: "t3.large", volumeGb: 80, tier: 4, clamped: false });
    expect(ec2Size(2, "echo")).toEqual({ instanceType: "t3.large", volumeGb: 80, tier: 4, clamped: true });
    expect(ec2Size(3, "hermes").volumeGb).toBe(50);
    expect(ec2Size(4, "hermes").volumeGb).toBe(80);
  });

  it("launches tier 3 hermes as t3.medium with 50 GB, and tier 2 as t3.large saying so", async () => {
    const hermes = h.makeSpec({ tier: 3, runtime: "hermes" });
    const handle = (await h.provisioner.provision(hermes, null)) as Ec2Handle;
    expect(handle.instanceType).toBe("t3.medium");
    expect((await volumeOf(handle.instanceId))?.Size).toBe(50);

    const small = h.makeSpec({ tier: 2, runtime: "echo" });
    const steps: string[] = [];
    const clamped = (await h.provisioner.provision(small, null, {
      step: (name, detail) => steps.push(`${name}: ${detail}`),
    })) as Ec2Handle;
    expect(clamped.instanceType).toBe("t3.large");
    expect((await volumeOf(clamped.instanceId))?.Size).toBe(80);
    expect(steps).toContain("tier_clamped: tier 2 has no EC2 size; using tier 4 (t3.large)");
  });
});

describe("the workspace VM", () => {
  it("carries the agent address, its tags on instance, volume and group, and no secret in user-data", async () => {
    const spec = h.makeSpec();
    const handle = (await h.provisioner.provision(spec, null, { operationId: "op_01" })) as Ec2Handle;
    expect(handle).toMatchObject({
      backend: "ec2",
      region: "us-east-1",
      instanceId: expect.stringMatching(/^i-/),
    });
    expect(handle.agentUrl).toBe(`http://${handle.privateIp}:8000`);
    const tags = {
      [EC2_TAGS.orgId]: spec.orgId,
      [EC2_TAGS.orgSlug]: "acme",
      [EC2_TAGS.role]: "workspace",
      [EC2_TAGS.workspaceId]: spec.workspaceId,
      [EC2_TAGS.environment]: TEST_SCOPE.environment,
      [EC2_TAGS.deployment]: TEST_SCOPE.deployment,
    };
    const volume = await volumeOf(handle.instanceId);
    expect(Object.fromEntries((volume?.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject(tags);
    const group = (
      await aws().ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [handle.securityGroupId] }))
    ).SecurityGroups?.[0];
    expect(Object.fromEntries((group?.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject(tags);
    const sources = (group?.IpPermissions ?? []).map((p) => [
      p.FromPort,
      p.UserIdGroupPairs?.map((g) => g.GroupId),
    ]);
    expect(sources).toEqual(
      expect.arrayContaining([
        [22, [h.net.eicGroupId]],
        [8000, [h.net.tenantGroupId]],
      ]),
    );
    expect(group?.IpPermissions?.flatMap((p) => p.IpRanges ?? [])).toEqual([]);

    const userData = await userDataOf(handle.instanceId);
    expect(userData).toContain(handle.secretArn);
    expect(userData).toContain("ghcr.io/molecule/workspace-hermes:test");
    expect(userData).toContain("AGENT_PUBLIC_URL");
    for (const value of Object.values(spec.env).filter((v) => v !== spec.workspaceId)) {
      expect(userData).not.toContain(value);
    }
    const bundle = await aws().secrets.send(new GetSecretValueCommand({ SecretId: handle.secretArn }));
    expect(JSON.parse(bundle.SecretString ?? "{}").env).toEqual(spec.env);
  });

  it("lets the org's tenant group reach the agent port when the org has one", async () => {
    const orgId = "org_01jec2tenantgroup000000000";
    const tenantGroup = await aws().ec2.send(
      new CreateSecurityGroupCommand({
        GroupName: "org-tenant",
        Description: "tenant",
        VpcId: h.net.vpcId,
        TagSpecifications: [
          {
            ResourceType: "security-group",
            Tags: ownerTags(TEST_SCOPE, { role: "tenant", orgId, orgSlug: "org-tenant" }),
          },
        ],
      }),
    );
    const spec = h.makeSpec({ orgId });
    const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
    const group = (
      await aws().ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [handle.securityGroupId] }))
    ).SecurityGroups?.[0];
    const agentRule = group?.IpPermissions?.find((p) => p.FromPort === 8000);
    expect(agentRule?.UserIdGroupPairs?.map((g) => g.GroupId)).toEqual([tenantGroup.GroupId]);
  });

  it("joins the org's workspaces group when its tenant made one, and boots the runtime's own AMI when it has one", async () => {
    const orgId = "org_01jec2orgworkspaces0000000";
    const orgGroup = await ensureOrgWorkspacesGroup(aws(), TEST_SCOPE, orgId, h.net.vpcId);
    const images = await aws().ec2.send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    const pinned = images.Images?.map((i) => i.ImageId).find((id) => id && id !== h.net.imageId) ?? "";
    const provisioner = createEc2Provisioner({
      ...testProvisionerOptions(h.net, aws()),
      imageIdFor: (runtime) => (runtime === "hermes" ? pinned : undefined),
    });
    const joined = async (handle: Ec2Handle) =>
      (await aws().ec2.send(new DescribeInstancesCommand({ InstanceIds: [handle.instanceId] })))
        .Reservations?.[0]?.Instances?.[0];
    const inOrg = (await provisioner.provision(h.makeSpec({ orgId, runtime: "hermes" }), null)) as Ec2Handle;
    const instance = await joined(inOrg);
    expect(instance?.SecurityGroups?.map((g) => g.GroupId).sort()).toEqual(
      [inOrg.securityGroupId, orgGroup].sort(),
    );
    expect(instance?.ImageId).toBe(pinned);
    const elsewhere = (await provisioner.provision(h.makeSpec({ runtime: "echo" }), null)) as Ec2Handle;
    const other = await joined(elsewhere);
    expect(other?.SecurityGroups?.map((g) => g.GroupId)).toEqual([elsewhere.securityGroupId]);
    expect(other?.ImageId).toBe(h.net.imageId);
  });

  it("uses the groups the control plane names for the agent port", async () => {
    const provisioner = createEc2Provisioner({
      ...testProvisionerOptions(h.net, aws()),
      agentSourceGroups: () => [h.net.eicGroupId],
    });
    const handle = (await provisioner.provision(h.makeSpec(), null)) as Ec2Handle;
    const group = (
      await aws().ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [handle.securityGroupId] }))
    ).SecurityGroups?.[0];
    expect(
      group?.IpPermissions?.find((p) => p.FromPort === 8000)?.UserIdGroupPairs?.map((g) => g.GroupId),
    ).toEqual([h.net.eicGroupId]);
  });

  it("refuses when nothing could reach the agent, and without an instance profile", async () => {
    const none = createEc2Provisioner({
      ...testProvisionerOptions(h.net, aws()),
      agentSourceGroupId: undefined,
    });
    await expect(none.provision(h.makeSpec(), null)).rejects.toMatchObject({
      code: "invalid_spec",
      retryable: false,
    });
    expect(() =>
      createEc2Provisioner({ ...testProvisionerOptions(h.net, aws()), instanceProfile: undefined }),
    ).toThrow(/Secrets Manager \+ IAM instance profile are required/);
    const error = (() => {
      try {
        createEc2Provisioner({ ...testProvisionerOptions(h.net, aws()), instanceProfile: "" });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ retryable: false });
  });

  it("suspends by stopping and says why when hibernation is off", async () => {
    const spec = h.makeSpec();
    await h.provisioner.provision(spec, null);
    const result = await h.provisioner.suspend(ref(spec));
    expect(result).toEqual({
      suspended: false,
      reason: "EC2 hibernation is not configured for this deployment; stopped instead",
    });
    expect((await h.provisioner.status(ref(spec))).state).toBe("stopped");
    expect(h.provisioner.capabilities()).toEqual({ suspend: false });
  });

  it("with hibernation configured, launches hibernation-ready and suspends by hibernating", async () => {
    const provisioner = createEc2Provisioner({ ...testProvisionerOptions(h.net, aws()), hibernation: true });
    expect(provisioner.capabilities()).toEqual({ suspend: true });
    const spec = h.makeSpec();
    const handle = (await provisioner.provision(spec, null)) as Ec2Handle;
    expect(
      (await provisioner.vms.find({ role: "workspace", orgId: spec.orgId, workspaceId: spec.workspaceId }))
        ?.hibernationConfigured,
    ).toBe(true);
    const steps: string[] = [];
    expect(await provisioner.suspend(ref(spec, handle), { step: (name) => steps.push(name) })).toEqual({
      suspended: true,
    });
    expect(steps).toEqual(["instance_hibernated"]);
    const started = (await provisioner.start(spec, handle)) as Ec2Handle;
    expect(started.instanceId).toBe(handle.instanceId);
    expect((await provisioner.status(ref(spec))).state).toBe("running");
  });

  it("recreates with a new environment: new bundle, same instance, running", async () => {
    const spec = h.makeSpec();
    const handle = (await h.provisioner.provision(spec, null)) as Ec2Handle;
    const changed = { ...spec, env: { ...spec.env, OPENAI_API_KEY: "sk-rotated-secret-value" } };
    const steps: string[] = [];
    const again = (await h.provisioner.start(changed, handle, {
      recreate: true,
      step: (name) => steps.push(name),
    })) as Ec2Handle;
    expect(again.instanceId).toBe(handle.instanceId);
    expect(steps).toEqual(
      expect.arrayContaining(["bootstrap_stored", "instance_stopped", "instance_running"]),
    );
    const bundle = await aws().secrets.send(new GetSecretValueCommand({ SecretId: again.secretArn }));
    expect(JSON.parse(bundle.SecretString ?? "{}").env.OPENAI_API_KEY).toBe("sk-rotated-secret-value");
    expect((await h.provisioner.status(ref(spec))).state).toBe("running");
  });

  it("without a VPC, every workspace uses the shared group, which destroy leaves alone", async () => {
    // The canary account's credentials come from a provider (STS AssumeRole in the control plane).
    const access = new AwsAccess({
      region: "us-east-1",
      endpoint: h.emulator.endpoint,
      credentials: async () => ({ accessKeyId: "canary", secretAccessKey: "canary-secret" }),
      clock: h.clock,
      sleep: h.clock.sleep,
    });
    try {
      const shared = createEc2Provisioner({
        ...testProvisionerOptions(h.net, access),
        vpcId: undefined,
        securityGroupId: h.net.tenantGroupId,
      });
      const spec = h.makeSpec();
      const handle = (await shared.provision(spec, null)) as Ec2Handle;
      expect(handle.securityGroupId).toBe(h.net.tenantGroupId);
      const kinds = (await shared.listManaged())
        .filter((r) => r.workspaceId === spec.workspaceId)
        .map((r) => r.kind);
      expect(kinds.sort()).toEqual(["ec2_bootstrap_secret", "ec2_instance"]);
      await shared.destroy(ref(spec, handle));
      expect((await shared.listManaged()).filter((r) => r.workspaceId === spec.workspaceId)).toEqual([]);
      const group = await aws().ec2.send(
        new DescribeSecurityGroupsCommand({ GroupIds: [h.net.tenantGroupId] }),
      );
      expect(group.SecurityGroups).toHaveLength(1);
    } finally {
      access.destroy();
    }
  });

  it("refuses a spec of another deployment without naming its secrets", async () => {
    const spec = h.makeSpec({ deployment: "elsewhere" });
    const error = await h.provisioner.provision(spec, null).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((error as Error).message).not.toContain(TEST_BOOT_TOKEN);
  });
});
