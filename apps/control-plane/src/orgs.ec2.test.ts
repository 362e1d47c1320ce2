/**
 * DELETE /cp/orgs/:slug with both backends on EC2 (moto behind the fault and fidelity proxy), built from the control
 * plane's configuration: the org's recorded workspace VM and a stray one tagged with the org but never recorded go
 * first, then the tenant VM, then the groups (the tenant's, the org's workspaces group) and the bundles, then the
 * sweep of whatever is still tagged with the org (an instance with no workspace id). A delete that
 * fails half-way is retried and converges; nothing of the org is left in the account, and another org is untouched.
 */
import { randomBytes } from "node:crypto";
import {
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  RunInstancesCommand,
} from "@aws-sdk/client-ec2";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { createIdGenerator } from "@molecule/contracts";
import { EC2_TAGS, type Ec2Handle, Ec2Vms, type Provisioner } from "@molecule/provisioner-core";
import { and, eq } from "drizzle-orm";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AwsNetwork,
  createNetwork,
  TEST_CREDENTIALS,
  testAccess,
} from "../../../packages/provisioner-core/src/ec2/testkit.ts";
import { createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { buildTenantBackend, buildWorkspaceProvisioner } from "./backends.ts";
import { loadConfig } from "./config.ts";
import { CP_MIGRATIONS } from "./db/migrations.ts";
import { cpOperations, cpOrgs } from "./db/schema.ts";
import type { Ec2TenantHandle } from "./tenants/ec2.ts";
import {
  createTestControlPlane,
  ec2ControlPlaneEnv,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

const DEPLOYMENT = "cp-ec2-orgs";
const ENVIRONMENT = "prod";
const ids = createIdGenerator();

let aws: AwsEmulator;
let net: AwsNetwork;
let database: TestDatabase;
let cp: TestControlPlane;
let provisioner: Provisioner;
let vms: Ec2Vms;
const tenantProvisions: Promise<unknown>[] = [];

beforeAll(async () => {
  aws = await startAwsEmulator();
  net = await createNetwork(aws.endpoint, `orgs-${randomBytes(3).toString("hex")}`);
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const config = loadConfig(
    ec2ControlPlaneEnv(aws.endpoint, net, {
      MOLECULE_DEPLOYMENT: DEPLOYMENT,
      MOLECULE_ENV: ENVIRONMENT,
      CP_WORKSPACE_BACKEND: "ec2",
      EC2_TERMINATE_DEADLINE_SECONDS: "20",
      TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
      TENANT_BACKUP_INTERVAL: "12h",
      TENANT_BACKUP_S3_ACCESS_KEY_ID: "AKIABACKUPONLY",
      TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "backup-secret-access-key",
    }),
  );
  const backendDeps = {
    logger: pino({ level: "silent" }),
    db: database.db,
    aws: { primary: testAccess(aws.endpoint).access },
  };
  provisioner = buildWorkspaceProvisioner(config, backendDeps);
  const tenants = buildTenantBackend(config, backendDeps);
  cp = await createTestControlPlane({
    database,
    provisioner,
    // Each tenant provision's outcome is kept, so a test can see an abandoned one end.
    tenants: {
      ...tenants,
      provision(spec, handle, ctx) {
        const call = tenants.provision(spec, handle, ctx);
        tenantProvisions.push(call);
        return call;
      },
    },
    settings: { deployment: DEPLOYMENT, backups: config.backups },
  });
  // The account as an operator sees this installation's resources, by their tags.
  vms = new Ec2Vms({
    aws: testAccess(aws.endpoint).access,
    scope: { deployment: DEPLOYMENT, environment: ENVIRONMENT },
    subnetId: net.subnetId,
    vpcId: net.vpcId,
    instanceProfile: net.instanceProfile,
  });
}, 180_000);

afterAll(async () => {
  await cp?.close();
  await database?.drop();
  await aws?.close();
});

const ec2 = () =>
  new EC2Client({ region: "us-east-1", endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });

async function instancesOf(orgId: string) {
  const reply = await ec2().send(
    new DescribeInstancesCommand({ Filters: [{ Name: `tag:${EC2_TAGS.orgId}`, Values: [orgId] }] }),
  );
  return (reply.Reservations ?? [])
    .flatMap((r) => r.Instances ?? [])
    .filter((i) => i.State?.Name !== "terminated");
}

/** Runs queued operations until the org is deleted, moving the clock past each retry's backoff. */
async function untilDeleted(orgId: string): Promise<void> {
  for (let round = 0; round < 10; round++) {
    await cp.runner.drain();
    const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, orgId));
    if (row?.status === "deleted") return;
    cp.clock.advance(60_000);
  }
  throw new Error("the org was not deleted");
}

describe("an org's tenant on EC2", () => {
  it("reads the control plane's backup settings from its bootstrap bundle, never from user-data", async () => {
    const org = await cp.createOrg("ec2-backed-up");
    await cp.runner.drain();
    const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, org.orgId));
    const secretArn = String(row?.tenantHandle?.secretArn ?? "");
    expect(secretArn).toMatch(/^arn:aws:secretsmanager:/);
    const secrets = new SecretsManagerClient({
      region: "us-east-1",
      endpoint: aws.endpoint,
      credentials: TEST_CREDENTIALS,
    });
    const bundle = JSON.parse(
      (await secrets.send(new GetSecretValueCommand({ SecretId: secretArn }))).SecretString ?? "{}",
    );
    expect(bundle.env).toMatchObject({
      MOLECULE_ORG_ID: org.orgId,
      TENANT_BACKUP_S3_PREFIX: "s3://molecule-backups/tenants",
      TENANT_BACKUP_INTERVAL: "12h",
      TENANT_BACKUP_S3_ACCESS_KEY_ID: "AKIABACKUPONLY",
      TENANT_BACKUP_S3_SECRET_ACCESS_KEY: "backup-secret-access-key",
    });
    const [instance] = await instancesOf(org.orgId);
    const userData = await ec2().send(
      new DescribeInstanceAttributeCommand({ InstanceId: instance?.InstanceId, Attribute: "userData" }),
    );
    const script = Buffer.from(userData.UserData?.Value ?? "", "base64").toString("utf8");
    expect(script).toContain(secretArn);
    expect(script).not.toContain("backup-secret-access-key");
  });
});

describe("deleting an org on EC2", () => {
  it("removes its workspace VMs (a stray with no row too), its tenant, groups and bundles; survives a failure half-way", async () => {
    const doomed = await cp.createOrg("ec2-doomed");
    const keeper = await cp.createOrg("ec2-keeper");
    await cp.runner.drain();
    const tenantGroups = await ec2().send(
      new DescribeSecurityGroupsCommand({
        Filters: [
          { Name: `tag:${EC2_TAGS.orgId}`, Values: [doomed.orgId] },
          { Name: `tag:${EC2_TAGS.role}`, Values: ["org-workspaces"] },
        ],
      }),
    );
    const orgWorkspacesGroup = tenantGroups.SecurityGroups?.[0]?.GroupId;
    expect(orgWorkspacesGroup).toMatch(/^sg-/);

    const recorded = ids.next("ws");
    const provisioned = await cp.tenant(doomed, "POST", "/cp/workspaces/provision", {
      body: { ...workspaceSpec(recorded), tier: 3 },
    });
    expect(provisioned.status, provisioned.text).toBe(202);
    await cp.runner.drain();
    const kept = ids.next("ws");
    await cp.tenant(keeper, "POST", "/cp/workspaces/provision", {
      body: { ...workspaceSpec(kept), tier: 3 },
    });
    await cp.runner.drain();

    // A stray: a workspace VM of the org that the control plane never recorded (a crash before its row).
    const stray = ids.next("ws");
    const strayHandle = (await provisioner.provision(
      {
        workspaceId: stray,
        orgId: doomed.orgId,
        deployment: DEPLOYMENT,
        runtime: "echo",
        tier: 3,
        env: { WORKSPACE_ID: stray },
        secretKeys: [],
        metadata: {},
      },
      null,
    )) as Ec2Handle;
    // And one tagged with the org but with no workspace id at all (made by hand, or by an older release).
    await ec2().send(
      new RunInstancesCommand({
        ImageId: net.imageId,
        InstanceType: "t3.micro",
        MinCount: 1,
        MaxCount: 1,
        SubnetId: net.subnetId,
        TagSpecifications: [
          {
            ResourceType: "instance",
            Tags: [
              { Key: EC2_TAGS.orgId, Value: doomed.orgId },
              { Key: EC2_TAGS.role, Value: "workspace" },
              { Key: EC2_TAGS.deployment, Value: DEPLOYMENT },
              { Key: EC2_TAGS.environment, Value: ENVIRONMENT },
            ],
          },
        ],
      }),
    );
    // (AWS, and the proxy, show a new instance to filtered listings a moment after it is made.)
    const before = await waitFor("the hand-made instance to be listed", async () => {
      const found = await instancesOf(doomed.orgId);
      return found.length === 4 ? found : undefined;
    });
    expect(before.map((i) => i.Tags?.find((t) => t.Key === EC2_TAGS.role)?.Value).sort()).toEqual([
      "tenant",
      "workspace",
      "workspace",
      "workspace",
    ]);
    // Every workspace VM of the org joined the org's workspaces group, the one its tenant admits on its port.
    const stayed = before.find((i) => i.InstanceId === strayHandle.instanceId);
    expect(stayed?.SecurityGroups?.map((g) => g.GroupId)).toContain(orgWorkspacesGroup);

    // The first attempt fails half-way: a group delete keeps failing past its retries (after an instance is gone).
    aws.inject({ action: "DeleteSecurityGroup", kind: "unavailable", times: 6 });
    const deleting = await cp.admin("DELETE", "/cp/orgs/ec2-doomed", { confirm: "ec2-doomed" });
    expect(deleting.status).toBe(202);
    await cp.runner.drain();
    const [midway] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, doomed.orgId));
    expect(midway?.status).toBe("deleting");
    const [operation] = await cp.db.db
      .select()
      .from(cpOperations)
      .where(and(eq(cpOperations.orgId, doomed.orgId), eq(cpOperations.kind, "destroy_org")));
    expect(operation).toMatchObject({ status: "pending", attempts: 1, error: { retryable: true } });
    expect(operation?.error?.message).toContain("DeleteSecurityGroup");

    await untilDeleted(doomed.orgId);
    expect(await instancesOf(doomed.orgId)).toEqual([]);
    expect(await vms.listOrg(doomed.orgId)).toEqual([]);

    // A second delete answers the tombstone and changes nothing.
    const again = await cp.admin("DELETE", "/cp/orgs/ec2-doomed", { confirm: "ec2-doomed" });
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ org: { status: "deleted" }, operation: null });

    // The other org keeps its tenant, its workspace and their groups.
    const keptResources = await vms.listOrg(keeper.orgId);
    expect(keptResources.filter((r) => r.kind === "ec2_instance")).toHaveLength(2);
    expect(keptResources.some((r) => r.workspaceId === kept)).toBe(true);
  });
});

describe("a tenant create that hangs on EC2", () => {
  it("is abandoned at its deadline (the held RunInstances ends), and the retry leaves exactly one tenant VM", async () => {
    aws.resetCounts();
    // RunInstances is held far longer than any test runs: only the attempt's signal can end the call. The deadline
    // leaves the calls before it (group, bundle) ample time; the hold is for the first attempt only.
    cp.deps.settings.operationDeadlinesMs = { provision_tenant: 8_000 };
    aws.inject({
      action: "RunInstances",
      kind: "slow",
      delayMs: 10 * 60_000,
      when: () => cp.deps.settings.operationDeadlinesMs !== undefined,
    });
    const first = tenantProvisions.length;
    const org = await cp.createOrg("ec2-hangs");
    expect(await cp.runner.drain()).toBe(1);
    expect(aws.counts().RunInstances).toBe(1);
    expect(aws.pendingFaults()).toBe(0);
    const [hung] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.orgId, org.orgId));
    expect(hung).toMatchObject({
      kind: "provision_tenant",
      status: "pending",
      attempts: 1,
      error: { code: "hung", retryable: true },
    });
    expect(hung?.steps.map((step) => step.name)).toContain("hung");
    // The abandoned call ended with a retryable error instead of waiting on the held request.
    await expect(tenantProvisions[first]).rejects.toMatchObject({ retryable: true });
    const [waiting] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, org.orgId));
    expect(waiting).toMatchObject({ status: "provisioning", tenantHandle: null, tenantUrl: null });

    cp.deps.settings.operationDeadlinesMs = undefined;
    cp.clock.advance(60_000);
    expect(await cp.runner.drain()).toBe(1);
    const [done] = await cp.db.db.select().from(cpOperations).where(eq(cpOperations.orgId, org.orgId));
    expect(done).toMatchObject({ status: "succeeded", attempts: 2 });
    const instances = await waitFor("the tenant VM to be listed", async () => {
      const found = await instancesOf(org.orgId);
      return found.length > 0 ? found : undefined;
    });
    expect(instances).toHaveLength(1);
    const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, org.orgId));
    expect((row?.tenantHandle as Ec2TenantHandle | null)?.instanceId).toBe(instances[0]?.InstanceId);
  });
});
