/**
 * The EC2 tenant backend as the control plane builds it from its configuration (buildTenantBackend), on moto behind
 * the AWS fault and fidelity proxy: what one tenant is made of (one instance, one group, one secret, tagged; no
 * secret in user-data; rules only from groups), a retry after a lost answer, the AMI choice, destroy, and canary
 * orgs in a second account reached with STS AssumeRole.
 */
import { randomBytes } from "node:crypto";
import {
  CreateSecurityGroupCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeImagesCommand,
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  type Instance,
} from "@aws-sdk/client-ec2";
import { CreateInstanceProfileCommand, IAMClient } from "@aws-sdk/client-iam";
import {
  GetSecretValueCommand,
  ListSecretsCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { fromTemporaryCredentials } from "@aws-sdk/credential-providers";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { EC2_TAGS, ProvisionerError } from "@molecule/provisioner-core";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AwsNetwork,
  createNetwork,
  TEST_CREDENTIALS,
  testAccess,
} from "../../../../packages/provisioner-core/src/ec2/testkit.ts";
import { createTestDatabase, type TestDatabase } from "../../../../test-support/pg.ts";
import { buildTenantBackend } from "../backends.ts";
import { loadConfig } from "../config.ts";
import { CP_MIGRATIONS } from "../db/migrations.ts";
import { cpThinAmiPins } from "../db/schema.ts";
import { TENANT_RUNTIME } from "../services/ami.ts";
import type { TenantBackend, TenantSpec } from "./backend.ts";
import { EC2_TENANT_PORT, type Ec2TenantHandle } from "./ec2.ts";

const REGION = "us-east-1";
const CANARY_REGION = "us-west-2";
const CANARY_ROLE = "arn:aws:iam::111122223333:role/molecule-canary";
const DEPLOYMENT = "cp-ec2-test";
const ENVIRONMENT = "staging";
const PULL_TOKEN = `ghp_${randomBytes(12).toString("hex")}`;
const TENANT_DB_URL = `postgres://tenant:${randomBytes(8).toString("hex")}@db.internal:5432/tenants`;

let aws: AwsEmulator;
let net: AwsNetwork;
let canaryNet: { vpcId: string; subnetId: string; eicGroupId: string };
let database: TestDatabase;
let ingressGroup: string;
let amis: string[];

const ec2 = () => new EC2Client({ region: REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });
const secrets = () =>
  new SecretsManagerClient({ region: REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });
const canaryCredentials = () =>
  fromTemporaryCredentials({
    params: { RoleArn: CANARY_ROLE, RoleSessionName: "test" },
    masterCredentials: TEST_CREDENTIALS,
    clientConfig: { region: CANARY_REGION, endpoint: aws.endpoint },
  });
const canaryEc2 = () =>
  new EC2Client({ region: CANARY_REGION, endpoint: aws.endpoint, credentials: canaryCredentials() });

beforeAll(async () => {
  aws = await startAwsEmulator();
  net = await createNetwork(aws.endpoint, `cp-${randomBytes(3).toString("hex")}`);
  ingressGroup = net.tenantGroupId;
  const images = await ec2().send(new DescribeImagesCommand({ Owners: ["amazon"] }));
  amis = (images.Images ?? []).map((image) => image.ImageId ?? "").filter(Boolean);
  // The canary account's network, made with the assumed role's credentials (moto keeps it in that account).
  const vpc = await canaryEc2().send(new CreateVpcCommand({ CidrBlock: "10.30.0.0/16" }));
  const subnet = await canaryEc2().send(
    new CreateSubnetCommand({ VpcId: vpc.Vpc?.VpcId, CidrBlock: "10.30.1.0/24" }),
  );
  // The tenant instance profile exists under the same name in the canary account.
  const iam = new IAMClient({
    region: CANARY_REGION,
    endpoint: aws.endpoint,
    credentials: canaryCredentials(),
  });
  await iam.send(new CreateInstanceProfileCommand({ InstanceProfileName: net.instanceProfile }));
  iam.destroy();
  const eic = await canaryEc2().send(
    new CreateSecurityGroupCommand({ GroupName: "canary-eic", Description: "eic", VpcId: vpc.Vpc?.VpcId }),
  );
  canaryNet = {
    vpcId: vpc.Vpc?.VpcId ?? "",
    subnetId: subnet.Subnet?.SubnetId ?? "",
    eicGroupId: eic.GroupId ?? "",
  };
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
}, 180_000);

afterAll(async () => {
  await database?.drop();
  await aws?.close();
});

/** The control plane's environment for EC2 tenants on this network. */
function env(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    MOLECULE_DEPLOYMENT: DEPLOYMENT,
    MOLECULE_ENV: ENVIRONMENT,
    CP_TENANT_BACKEND: "ec2",
    CP_PUBLIC_URL: "http://cp.internal:8090",
    AWS_REGION: REGION,
    AWS_ENDPOINT_URL: aws.endpoint,
    EC2_VPC_ID: net.vpcId,
    EC2_SUBNET_ID: net.subnetId,
    EIC_ENDPOINT_SG_ID: net.eicGroupId,
    EC2_TENANT_INGRESS_SG_IDS: ingressGroup,
    EC2_TENANT_IAM_PROFILE: net.instanceProfile,
    EC2_AMI: amis[0] ?? "",
    TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.0.0",
    CANARY_TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.1.0-rc1",
    GHCR_PULL_TOKEN: PULL_TOKEN,
    TENANT_DATABASE_URL: TENANT_DB_URL,
    EC2_TERMINATE_DEADLINE_SECONDS: "20",
    ...overrides,
  };
}

function backend(overrides: Record<string, string> = {}): TenantBackend {
  const config = loadConfig(env(overrides));
  const canary = config.ec2.canary
    ? testAccess(aws.endpoint, { region: CANARY_REGION, credentials: canaryCredentials() }).access
    : null;
  return buildTenantBackend(config, {
    logger: pino({ level: "silent" }),
    db: database.db,
    aws: { primary: testAccess(aws.endpoint).access, canary },
  });
}

let seq = 0;
function spec(overrides: Partial<TenantSpec> = {}): TenantSpec {
  seq += 1;
  const suffix = `${randomBytes(2).toString("hex")}${seq}`;
  const orgId = `org_01jcpec2${suffix.padEnd(18, "0")}`;
  return {
    orgId,
    slug: `acme-${suffix}`,
    deployment: DEPLOYMENT,
    env: {
      MOLECULE_ORG_ID: orgId,
      CP_PROVISION_URL: "http://cp.internal:8090",
      CP_TENANT_TOKEN: `mct_${randomBytes(16).toString("hex")}`,
      PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
      ADMIN_TOKEN: `mat_${randomBytes(16).toString("hex")}`,
      SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
      MOLECULE_ENV: "production",
    },
    secretKeys: ["CP_TENANT_TOKEN", "PROVISION_SHARED_SECRET", "ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY"],
    isCanary: false,
    ...overrides,
  };
}

/** The org's instances that are not terminated, as the account holds them (through the proxy). */
async function liveInstances(orgId: string, client = ec2()): Promise<Instance[]> {
  const reply = await client.send(
    new DescribeInstancesCommand({ Filters: [{ Name: `tag:${EC2_TAGS.orgId}`, Values: [orgId] }] }),
  );
  return (reply.Reservations ?? [])
    .flatMap((r) => r.Instances ?? [])
    .filter((i) => i.State?.Name !== "terminated");
}

async function groupsOf(orgId: string, client = ec2()) {
  const reply = await client.send(
    new DescribeSecurityGroupsCommand({ Filters: [{ Name: `tag:${EC2_TAGS.orgId}`, Values: [orgId] }] }),
  );
  return reply.SecurityGroups ?? [];
}

async function secretsOf(orgId: string) {
  const reply = await secrets().send(new ListSecretsCommand({ IncludePlannedDeletion: false }));
  return (reply.SecretList ?? []).filter(
    (s) => !s.DeletedDate && s.Tags?.some((t) => t.Key === EC2_TAGS.orgId && t.Value === orgId),
  );
}

async function userDataOf(instanceId: string, client = ec2()): Promise<string> {
  const reply = await client.send(
    new DescribeInstanceAttributeCommand({ InstanceId: instanceId, Attribute: "userData" }),
  );
  return Buffer.from(reply.UserData?.Value ?? "", "base64").toString("utf8");
}

const tagsOf = (tags: readonly { Key?: string; Value?: string }[] | undefined) =>
  Object.fromEntries((tags ?? []).map((t) => [t.Key, t.Value]));

describe("the EC2 tenant backend", () => {
  it("makes one instance, one group and one secret, tagged; user-data holds only the secret's ARN", async () => {
    const tenants = backend();
    const s = spec();
    const steps: string[] = [];
    const made = await tenants.provision(s, null, {
      step: (name, detail) => steps.push(`${name} ${detail ?? ""}`),
      operationId: "op_first",
    });
    const handle = made.handle as Ec2TenantHandle;
    expect(handle).toMatchObject({ backend: "ec2", account: "primary", region: REGION });
    expect(made.url).toBe(`http://${handle.privateIp}:${EC2_TENANT_PORT}`);
    expect(steps.join("\n")).toContain(`ami_chosen ${amis[0]} (EC2_AMI, ${REGION}, primary account)`);

    const instances = await liveInstances(s.orgId);
    expect(instances).toHaveLength(1);
    const instance = instances[0] as Instance;
    expect(instance.InstanceId).toBe(handle.instanceId);
    expect(instance.InstanceType).toBe("t3.small");
    expect(instance.ImageId).toBe(amis[0]);
    expect(instance.SubnetId).toBe(net.subnetId);
    const expectedTags = {
      [EC2_TAGS.orgId]: s.orgId,
      [EC2_TAGS.orgSlug]: s.slug,
      [EC2_TAGS.role]: "tenant",
      [EC2_TAGS.environment]: ENVIRONMENT,
      [EC2_TAGS.deployment]: DEPLOYMENT,
    };
    expect(tagsOf(instance.Tags)).toMatchObject(expectedTags);

    const groups = await groupsOf(s.orgId);
    expect(groups.map((g) => g.GroupId)).toEqual([handle.securityGroupId]);
    expect(tagsOf(groups[0]?.Tags)).toMatchObject(expectedTags);
    const rules = (groups[0]?.IpPermissions ?? []).map((p) => ({
      port: p.FromPort,
      sources: (p.UserIdGroupPairs ?? []).map((g) => g.GroupId),
      cidrs: [...(p.IpRanges ?? []), ...(p.Ipv6Ranges ?? [])],
    }));
    expect(rules).toEqual(
      expect.arrayContaining([
        { port: 22, sources: [net.eicGroupId], cidrs: [] },
        { port: EC2_TENANT_PORT, sources: [ingressGroup], cidrs: [] },
      ]),
    );
    expect(rules).toHaveLength(2);

    const stored = await secretsOf(s.orgId);
    expect(stored.map((x) => x.ARN)).toEqual([handle.secretArn]);
    expect(tagsOf(stored[0]?.Tags)).toMatchObject(expectedTags);
    // Bound to its instance: the tenant profile's policy lets only that instance read it (docs/backends/ec2.md).
    const account = handle.secretArn.split(":")[4];
    expect(tagsOf(stored[0]?.Tags).MoleculeInstanceArn).toBe(
      `arn:aws:ec2:${REGION}:${account}:instance/${handle.instanceId}`,
    );
    const bundle = JSON.parse(
      (await secrets().send(new GetSecretValueCommand({ SecretId: handle.secretArn }))).SecretString ?? "{}",
    );
    expect(bundle.env).toEqual({
      ...s.env,
      PORT: String(EC2_TENANT_PORT),
      HOST: "0.0.0.0",
      MOLECULE_DATA_DIR: "/data",
      DATABASE_URL: TENANT_DB_URL,
    });
    expect(bundle.registry).toEqual({ server: "ghcr.io", username: "molecule", password: PULL_TOKEN });

    const userData = await userDataOf(handle.instanceId);
    expect(userData).toContain(handle.secretArn);
    expect(userData).toContain("ghcr.io/acme/tenant-platform:1.0.0");
    expect(userData).toContain("PLATFORM_URL=http://$private_ip:$PORT");
    for (const value of [...Object.values(s.env), PULL_TOKEN, TENANT_DB_URL]) {
      if (value.length < 16) continue;
      expect(userData).not.toContain(value);
      expect(userData).not.toContain(Buffer.from(value).toString("base64"));
    }
    expect(steps.join("\n")).not.toContain(s.env.ADMIN_TOKEN);

    expect(await tenants.status({ orgId: s.orgId, slug: s.slug, handle })).toMatchObject({
      state: "running",
    });
    const listed = (await tenants.listManaged()).filter((r) => r.orgId === s.orgId);
    expect(listed.map((r) => r.kind).sort()).toEqual(
      ["ec2_bootstrap_secret", "ec2_instance", "ec2_security_group"].sort(),
    );
  });

  it("makes no second VM when RunInstances' answer is lost, nor on a new attempt without a handle", async () => {
    const tenants = backend();
    const s = spec();
    aws.inject({ action: "RunInstances", kind: "drop-after" });
    const first = await tenants.provision(s, null, { operationId: "op_lost" });
    expect(aws.pendingFaults()).toBe(0);
    // The operation's process died before it stored the handle: the next attempt provisions again from nothing.
    const again = await backend().provision(s, null, { operationId: "op_lost" });
    expect((again.handle as Ec2TenantHandle).instanceId).toBe((first.handle as Ec2TenantHandle).instanceId);
    expect(await liveInstances(s.orgId)).toHaveLength(1);
    expect(await groupsOf(s.orgId)).toHaveLength(1);
    expect(await secretsOf(s.orgId)).toHaveLength(1);
  });

  it("boots the AMI pinned for tenant-platform in its region; with no pin and no EC2_AMI it fails without retrying", async () => {
    const pinned = amis[1] ?? "";
    await database.db
      .insert(cpThinAmiPins)
      .values({ runtime: TENANT_RUNTIME, region: REGION, amiId: pinned });
    try {
      const s = spec();
      const made = await backend({ EC2_AMI: "" }).provision(s, null);
      const [instance] = await liveInstances(s.orgId);
      expect(instance?.ImageId).toBe(pinned);
      expect(instance?.InstanceId).toBe((made.handle as Ec2TenantHandle).instanceId);
    } finally {
      await database.db.delete(cpThinAmiPins);
    }
    const s = spec();
    const failure = await backend({ EC2_AMI: "" })
      .provision(s, null)
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ProvisionerError);
    expect(failure).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((failure as Error).message).toContain('no AMI for runtime "tenant-platform" in us-east-1');
    expect(await liveInstances(s.orgId)).toHaveLength(0);
    expect(await groupsOf(s.orgId)).toHaveLength(0);
  });

  it("answers TENANT_URL_TEMPLATE's URL when set", async () => {
    const s = spec();
    const made = await backend({ TENANT_URL_TEMPLATE: "https://{slug}.tenants.example.com" }).provision(
      s,
      null,
    );
    expect(made.url).toBe(`https://${s.slug}.tenants.example.com`);
  });

  it("destroy leaves no instance, group or secret of the tenant, and a second destroy is a no-op", async () => {
    const tenants = backend();
    const s = spec();
    const made = await tenants.provision(s, null);
    const ref = { orgId: s.orgId, slug: s.slug, handle: made.handle };
    await tenants.destroy(ref);
    expect(await liveInstances(s.orgId)).toHaveLength(0);
    expect(await groupsOf(s.orgId)).toHaveLength(0);
    expect(await secretsOf(s.orgId)).toHaveLength(0);
    expect((await tenants.listManaged()).filter((r) => r.orgId === s.orgId)).toEqual([]);
    expect(await tenants.status(ref)).toEqual({ state: "missing" });
    await tenants.destroy(ref);
    await tenants.destroy({ ...ref, handle: null });
  });

  it("runs a canary org's tenant in the canary account and region with the canary image", async () => {
    const canaryEnv = {
      CANARY_ROLE_ARN: CANARY_ROLE,
      CANARY_REGION,
      CANARY_VPC_ID: canaryNet.vpcId,
      CANARY_SUBNET_ID: canaryNet.subnetId,
      CANARY_EIC_ENDPOINT_SG_ID: canaryNet.eicGroupId,
    };
    const tenants = backend(canaryEnv);
    const s = spec({ isCanary: true });
    const made = await tenants.provision(s, null);
    const handle = made.handle as Ec2TenantHandle;
    expect(handle).toMatchObject({ account: "canary", region: CANARY_REGION });

    expect(await liveInstances(s.orgId)).toHaveLength(0);
    const inCanary = await liveInstances(s.orgId, canaryEc2());
    expect(inCanary).toHaveLength(1);
    expect(inCanary[0]?.SubnetId).toBe(canaryNet.subnetId);
    expect(inCanary[0]?.Placement?.AvailabilityZone).toMatch(/^us-west-2/);
    expect(await userDataOf(handle.instanceId, canaryEc2())).toContain(
      "ghcr.io/acme/tenant-platform:1.1.0-rc1",
    );
    const groups = await groupsOf(s.orgId, canaryEc2());
    expect(groups.map((g) => g.VpcId)).toEqual([canaryNet.vpcId]);
    // Only the canary account's own groups are named (the primary's cannot be).
    expect(
      groups[0]?.IpPermissions?.map((p) => [p.FromPort, p.UserIdGroupPairs?.map((g) => g.GroupId)]),
    ).toEqual([[22, [canaryNet.eicGroupId]]]);

    // A plain org of the same control plane stays in the primary account.
    const plain = spec();
    await tenants.provision(plain, null);
    expect(await liveInstances(plain.orgId)).toHaveLength(1);
    expect(await liveInstances(plain.orgId, canaryEc2())).toHaveLength(0);

    await tenants.destroy({ orgId: s.orgId, slug: s.slug, handle: null });
    expect(await liveInstances(s.orgId, canaryEc2())).toHaveLength(0);
    expect(await groupsOf(s.orgId, canaryEc2())).toHaveLength(0);
  });
});
