/**
 * The shared EC2 VM machinery against moto: what a VM is made of (tags on instance, volume, group and secret; rules
 * only from source groups; user-data without a credential), adoption, stop/start, destroy of everything, and the
 * listings both roles use.
 */
import {
  DescribeImagesCommand,
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  DescribeVolumesCommand,
} from "@aws-sdk/client-ec2";
import { DescribeSecretCommand, GetSecretValueCommand } from "@aws-sdk/client-secrets-manager";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProvisionerError } from "../errors.ts";
import { awsError } from "./aws.ts";
import { INSTANCE_PROFILE_REQUIRED } from "./bootstrap.ts";
import { clientToken, findInstances } from "./instances.ts";
import { ensureOrgWorkspacesGroup } from "./security-group.ts";
import { EC2_TAGS, type VmOwner } from "./tags.ts";
import {
  type AwsNetwork,
  createNetwork,
  type MotoServer,
  startMoto,
  TEST_ORG,
  TEST_SCOPE,
  testAccess,
} from "./testkit.ts";
import { EC2_RESOURCE_KINDS, type Ec2VmOptions, Ec2Vms, type VmSpec } from "./vm.ts";

let moto: MotoServer;
let net: AwsNetwork;
let vms: Ec2Vms;
const access = () => vms.aws;

function makeVms(options: Partial<Ec2VmOptions> = {}): Ec2Vms {
  return new Ec2Vms({
    aws: testAccess(moto.endpoint).access,
    scope: TEST_SCOPE,
    imageId: net.imageId,
    subnetId: net.subnetId,
    vpcId: net.vpcId,
    sshSourceGroupId: net.eicGroupId,
    instanceProfile: net.instanceProfile,
    waitDeadlineMs: 10_000,
    terminateDeadlineMs: 10_000,
    ...options,
  });
}

beforeAll(async () => {
  moto = await startMoto();
  net = await createNetwork(moto.endpoint, "vm-test");
  vms = makeVms();
}, 120_000);

afterAll(async () => {
  vms?.aws.destroy();
  await moto?.stop();
});

let seq = 0;
function workspaceOwner(): VmOwner {
  seq += 1;
  return {
    role: "workspace",
    orgId: TEST_ORG,
    workspaceId: `ws_01jec2vm00000000000000${String(seq).padStart(4, "0")}`,
  };
}

const SECRET = "boot-token-value-that-must-stay-secret";

function vmSpec(owner: VmOwner, overrides: Partial<VmSpec> = {}): VmSpec {
  return {
    owner,
    image: "ghcr.io/molecule/workspace-hermes:test",
    env: {
      WORKSPACE_ID: owner.workspaceId ?? "",
      WORKSPACE_BOOT_TOKEN: SECRET,
      API_KEY: "sk-another-secret-value",
    },
    registry: { server: "ghcr.io", username: "bot", password: "registry-pull-token-secret" },
    instanceType: "t3.medium",
    rootVolumeGb: 40,
    servicePort: 8000,
    serviceSourceGroupIds: [net.tenantGroupId],
    addressEnv: "AGENT_PUBLIC_URL",
    dataPath: "/workspace",
    operationKey: "op_1",
    ...overrides,
  };
}

describe("a VM", () => {
  it("is tagged on its instance, volume, group and secret, and its user-data holds no secret", async () => {
    const owner = workspaceOwner();
    const steps: string[] = [];
    const vm = await vms.ensure(vmSpec(owner), {}, { step: (name) => steps.push(name) });
    expect(steps).toEqual([
      "security_group_ready",
      "bootstrap_stored",
      "instance_created",
      "instance_running",
    ]);
    expect(vm.instance.state).toBe("running");
    expect(vm.privateIp).toMatch(/^10\.20\.1\.\d+$/);
    const expected = {
      [EC2_TAGS.deployment]: TEST_SCOPE.deployment,
      [EC2_TAGS.environment]: TEST_SCOPE.environment,
      [EC2_TAGS.role]: "workspace",
      [EC2_TAGS.orgId]: TEST_ORG,
      [EC2_TAGS.workspaceId]: owner.workspaceId,
    };
    expect(vm.instance.tags).toMatchObject(expected);

    const volumes = await access().ec2.send(
      new DescribeVolumesCommand({ Filters: [{ Name: "attachment.instance-id", Values: [vm.instance.id] }] }),
    );
    expect(volumes.Volumes).toHaveLength(1);
    expect(volumes.Volumes?.[0]?.Size).toBe(40);
    expect(Object.fromEntries((volumes.Volumes?.[0]?.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject(
      expected,
    );

    const groups = await access().ec2.send(
      new DescribeSecurityGroupsCommand({ GroupIds: [vm.securityGroupId] }),
    );
    const group = groups.SecurityGroups?.[0];
    expect(Object.fromEntries((group?.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject(expected);
    const rules = (group?.IpPermissions ?? []).map((p) => ({
      port: p.FromPort,
      to: p.ToPort,
      sources: (p.UserIdGroupPairs ?? []).map((g) => g.GroupId),
      cidrs: [...(p.IpRanges ?? []), ...(p.Ipv6Ranges ?? [])],
    }));
    expect(rules).toEqual(
      expect.arrayContaining([
        { port: 22, to: 22, sources: [net.eicGroupId], cidrs: [] },
        { port: 8000, to: 8000, sources: [net.tenantGroupId], cidrs: [] },
      ]),
    );
    expect(rules).toHaveLength(2);

    const secret = await access().secrets.send(new DescribeSecretCommand({ SecretId: vm.secretArn }));
    expect(Object.fromEntries((secret.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject(expected);
    const value = await access().secrets.send(new GetSecretValueCommand({ SecretId: vm.secretArn }));
    expect(JSON.parse(value.SecretString ?? "{}")).toMatchObject({
      env: { WORKSPACE_BOOT_TOKEN: SECRET },
      registry: { password: "registry-pull-token-secret" },
    });

    const attribute = await access().ec2.send(
      new DescribeInstanceAttributeCommand({ InstanceId: vm.instance.id, Attribute: "userData" }),
    );
    const userData = Buffer.from(attribute.UserData?.Value ?? "", "base64").toString("utf8");
    expect(userData).toContain(vm.secretArn);
    expect(userData).toContain("aws secretsmanager get-secret-value");
    expect(userData).toContain("--env-file");
    expect(userData).toContain("AGENT_PUBLIC_URL=http://$private_ip:$PORT");
    for (const value of [SECRET, "sk-another-secret-value", "registry-pull-token-secret"]) {
      expect(userData).not.toContain(value);
      expect(userData).not.toContain(Buffer.from(value).toString("base64"));
    }
  });

  it("is adopted, not made twice, by a second ensure with or without a hint", async () => {
    const owner = workspaceOwner();
    const first = await vms.ensure(vmSpec(owner));
    const again = await vms.ensure(vmSpec(owner, { operationKey: "op_2" }), {
      instanceId: first.instance.id,
    });
    const fresh = await makeVms().ensure(vmSpec(owner, { operationKey: "op_3" }));
    expect(again.instance.id).toBe(first.instance.id);
    expect(fresh.instance.id).toBe(first.instance.id);
    expect(fresh.securityGroupId).toBe(first.securityGroupId);
    expect(fresh.secretArn).toBe(first.secretArn);
    expect(await findInstances(access(), TEST_SCOPE, owner)).toHaveLength(1);
  });

  it("stops and starts, keeping its instance and address", async () => {
    const owner = workspaceOwner();
    const vm = await vms.ensure(vmSpec(owner));
    expect(await vms.stop(owner, { instanceId: vm.instance.id })).toBe(true);
    expect((await vms.find(owner))?.state).toBe("stopped");
    expect(await vms.stop(owner)).toBe(true);
    const started = await vms.start(owner);
    expect(started?.id).toBe(vm.instance.id);
    expect(started?.state).toBe("running");
    expect(started?.privateIp).toBe(vm.privateIp);
    const ensured = await vms.ensure(vmSpec(owner));
    expect(ensured.instance.id).toBe(vm.instance.id);
  });

  it("is destroyed whole (instance, group, secret), twice, and lists nothing afterwards", async () => {
    const keep = workspaceOwner();
    const owner = workspaceOwner();
    await vms.ensure(vmSpec(keep));
    const vm = await vms.ensure(vmSpec(owner));
    const before = (await vms.listManaged("workspace")).filter((r) => r.workspaceId === owner.workspaceId);
    expect(before.map((r) => r.kind).sort()).toEqual(
      [EC2_RESOURCE_KINDS.secret, EC2_RESOURCE_KINDS.instance, EC2_RESOURCE_KINDS.securityGroup].sort(),
    );
    const steps: string[] = [];
    await vms.destroy(owner, { instanceId: vm.instance.id }, { step: (name) => steps.push(name) });
    expect(steps).toEqual(["instance_terminated", "security_group_deleted", "bootstrap_deleted"]);
    await vms.destroy(owner);
    expect(await vms.find(owner)).toBeNull();
    const after = await vms.listManaged();
    expect(after.filter((r) => r.workspaceId === owner.workspaceId)).toEqual([]);
    expect(after.filter((r) => r.workspaceId === keep.workspaceId)).toHaveLength(3);
  });

  it("is a tenant VM too, and an org's listing holds both roles", async () => {
    const orgId = "org_01jec2vmorg00000000000000";
    const tenant: VmOwner = { role: "tenant", orgId, orgSlug: "acme-corp" };
    const workspace: VmOwner = { ...workspaceOwner(), orgId };
    await vms.ensure(
      vmSpec(tenant, {
        image: "ghcr.io/molecule/tenant-platform:test",
        servicePort: 8080,
        addressEnv: "PLATFORM_URL",
        dataPath: "/data",
      }),
    );
    await vms.ensure(vmSpec(workspace));
    const org = await vms.listOrg(orgId);
    expect(org).toHaveLength(6);
    expect((await vms.listManaged("tenant")).every((r) => r.orgId === orgId && r.workspaceId === null)).toBe(
      true,
    );
    const [instance] = await findInstances(access(), TEST_SCOPE, tenant);
    expect(instance?.tags).toMatchObject({
      [EC2_TAGS.orgSlug]: "acme-corp",
      [EC2_TAGS.name]: "tenant-acme-corp",
    });
    const removed = await vms.destroyOrg(orgId);
    expect(removed).toHaveLength(6);
    expect(await vms.listOrg(orgId)).toEqual([]);
    expect(await vms.find(tenant)).toBeNull();
  });

  it("boots the AMI its spec names and joins the org's workspaces group, which has no rules and is listed for the org", async () => {
    const owner = workspaceOwner();
    const orgGroup = await ensureOrgWorkspacesGroup(access(), TEST_SCOPE, TEST_ORG, net.vpcId);
    expect(await ensureOrgWorkspacesGroup(access(), TEST_SCOPE, TEST_ORG, net.vpcId)).toBe(orgGroup);
    const images = await access().ec2.send(new DescribeImagesCommand({ Owners: ["amazon"] }));
    const other = images.Images?.map((image) => image.ImageId).find((id) => id && id !== net.imageId) ?? "";
    const vm = await vms.ensure(vmSpec(owner, { imageId: other, memberGroupIds: [orgGroup] }));
    const described = await access().ec2.send(
      new DescribeInstancesCommand({ InstanceIds: [vm.instance.id] }),
    );
    const raw = described.Reservations?.[0]?.Instances?.[0];
    expect(raw?.ImageId).toBe(other);
    const joined = raw?.SecurityGroups?.map((g) => g.GroupId);
    expect(joined?.sort()).toEqual([vm.securityGroupId, orgGroup].sort());
    const group = (await access().ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [orgGroup] })))
      .SecurityGroups?.[0];
    expect(group?.IpPermissions).toEqual([]);
    expect(Object.fromEntries((group?.Tags ?? []).map((t) => [t.Key, t.Value]))).toMatchObject({
      [EC2_TAGS.role]: "org-workspaces",
      [EC2_TAGS.orgId]: TEST_ORG,
    });
    expect((await vms.listOrg(TEST_ORG)).map((r) => r.id)).toContain(orgGroup);
    await vms.destroy(owner);
  });

  it("is invisible to another environment or deployment in the same account", async () => {
    const owner = workspaceOwner();
    await vms.ensure(vmSpec(owner));
    for (const scope of [
      { ...TEST_SCOPE, environment: "prod" },
      { ...TEST_SCOPE, deployment: "other" },
    ]) {
      const other = makeVms({ scope });
      expect(await other.find(owner)).toBeNull();
      expect((await other.listManaged()).filter((r) => r.workspaceId === owner.workspaceId)).toEqual([]);
      await other.destroy(owner);
    }
    expect((await vms.find(owner))?.state).toBe("running");
  });
});

describe("refusals", () => {
  it("refuses without an instance profile, naming what is required", () => {
    const error = (() => {
      try {
        makeVms({ instanceProfile: undefined });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((error as Error).message).toContain("Secrets Manager + IAM instance profile are required");
    expect(INSTANCE_PROFILE_REQUIRED).toContain("Secrets Manager + IAM instance profile are required");
  });

  it("refuses a multi-line env value, naming the variable only", async () => {
    const owner = workspaceOwner();
    const error = await vms
      .ensure(vmSpec(owner, { env: { PRIVATE_KEY: "-----BEGIN\nsecret-body\n-----END" } }))
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((error as Error).message).toContain("PRIVATE_KEY");
    expect((error as Error).message).not.toContain("secret-body");
  });

  it("never opens a port to a CIDR", async () => {
    const owner = workspaceOwner();
    await expect(vms.ensure(vmSpec(owner, { serviceSourceGroupIds: ["0.0.0.0/0"] }))).rejects.toMatchObject({
      code: "invalid_spec",
    });
  });
});

describe("client tokens and errors", () => {
  it("derives one ClientToken per owner and operation, at most 64 ASCII characters", () => {
    const a = clientToken("molecule-x-test-ws-1", "op_1:provision");
    expect(a).toBe(clientToken("molecule-x-test-ws-1", "op_1:provision"));
    expect(a).not.toBe(clientToken("molecule-x-test-ws-2", "op_1:provision"));
    expect(a).not.toBe(clientToken("molecule-x-test-ws-1", "op_2:provision"));
    expect(a.length).toBeLessThanOrEqual(64);
    expect(a).toMatch(/^[\x21-\x7e]+$/);
  });

  it("maps AWS errors to codes and retryable without AWS's text", () => {
    const sdk = (name: string, status: number, message = "echo of user-data SECRET") =>
      Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status, requestId: "req-1" } });
    const cases: [unknown, string, boolean][] = [
      [sdk("RequestLimitExceeded", 503), "rate_limited", true],
      [sdk("ThrottlingException", 400), "rate_limited", true],
      [sdk("InternalError", 500), "backend_unavailable", true],
      [sdk("Unavailable", 503), "backend_unavailable", true],
      [sdk("InsufficientInstanceCapacity", 500), "capacity", true],
      [sdk("InsufficientInstanceCapacity", 400), "capacity", true],
      [sdk("InvalidParameterValue", 400), "invalid_spec", false],
      [sdk("UnauthorizedOperation", 403), "backend_error", false],
      [sdk("DependencyViolation", 400), "conflict", true],
      [sdk("InvalidInstanceID.NotFound", 400), "not_found", false],
      [Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }), "backend_unavailable", true],
    ];
    for (const [error, code, retryable] of cases) {
      const mapped = awsError("EC2", "RunInstances", error);
      expect(mapped, String((error as Error).name)).toMatchObject({ code, retryable });
      expect(mapped.message).not.toContain("SECRET");
      expect(mapped.message).not.toContain("hang up");
    }
    expect(awsError("EC2", "RunInstances", sdk("RequestLimitExceeded", 503)).message).toBe(
      "AWS EC2 RunInstances failed: throttled (RequestLimitExceeded, HTTP 503) (request id req-1)",
    );
  });
});
