/**
 * The control plane's reconciler with both backends on EC2 (moto behind the fault and fidelity proxy): what the
 * account holds under this deployment's and this environment's tags is compared with the org and workspace rows. A
 * stray workspace VM tagged as ours is an orphan (instance, group and bundle, each with its provider id), deleted only
 * when enabled and past the grace; one tagged for another environment is never listed or touched; a workspace whose
 * instance was terminated behind the control plane's back becomes `failed` and counts as a ghost.
 */
import { randomBytes } from "node:crypto";
import {
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from "@aws-sdk/client-ec2";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { AdminStats, createIdGenerator, ReconcileReport } from "@molecule/contracts";
import { EC2_TAGS, type Ec2Handle, type Provisioner } from "@molecule/provisioner-core";
import { eq } from "drizzle-orm";
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
import { cpTenantResources, cpWorkspaces } from "./db/schema.ts";
import {
  createTestControlPlane,
  ec2ControlPlaneEnv,
  type TenantIdentity,
  type TestControlPlane,
  workspaceSpec,
} from "./testing.ts";

const DEPLOYMENT = "cp-ec2-reconcile";
const ENVIRONMENT = "prod";
const ids = createIdGenerator();

let aws: AwsEmulator;
let net: AwsNetwork;
let database: TestDatabase;
let cp: TestControlPlane;
let provisioner: Provisioner;
let org: TenantIdentity;

beforeAll(async () => {
  aws = await startAwsEmulator();
  net = await createNetwork(aws.endpoint, `rec-${randomBytes(3).toString("hex")}`);
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const config = loadConfig(
    ec2ControlPlaneEnv(aws.endpoint, net, {
      MOLECULE_DEPLOYMENT: DEPLOYMENT,
      MOLECULE_ENV: ENVIRONMENT,
      CP_WORKSPACE_BACKEND: "ec2",
      EC2_TERMINATE_DEADLINE_SECONDS: "20",
    }),
  );
  const backendDeps = {
    logger: pino({ level: "silent" }),
    db: database.db,
    aws: { primary: testAccess(aws.endpoint).access },
  };
  provisioner = buildWorkspaceProvisioner(config, backendDeps);
  cp = await createTestControlPlane({
    database,
    provisioner,
    tenants: buildTenantBackend(config, backendDeps),
    settings: { deployment: DEPLOYMENT, reconcile: config.reconcile },
  });
  org = await cp.createOrg("ec2-reconciled");
  await cp.runner.drain();
}, 180_000);

afterAll(async () => {
  await cp?.close();
  await database?.drop();
  await aws?.close();
});

const ec2 = () =>
  new EC2Client({ region: "us-east-1", endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });

async function liveInstance(instanceId: string): Promise<boolean> {
  const reply = await ec2().send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
  const state = reply.Reservations?.[0]?.Instances?.[0]?.State?.Name;
  return state !== undefined && state !== "terminated" && state !== "shutting-down";
}

async function reconcile(): Promise<ReconcileReport> {
  const answer = await cp.admin("POST", "/cp/admin/reconcile");
  expect(answer.status, answer.text).toBe(200);
  return ReconcileReport.parse(answer.body);
}

describe("the control plane's reconciler on EC2", () => {
  let recorded: string;
  let recordedInstance: string;

  it("finds nothing wrong with an org, its tenant and a recorded workspace", async () => {
    recorded = ids.next("ws");
    const provisioned = await cp.tenant(org, "POST", "/cp/workspaces/provision", {
      body: { ...workspaceSpec(recorded), tier: 3 },
    });
    expect(provisioned.status, provisioned.text).toBe(202);
    await cp.runner.drain();
    const [row] = await cp.db.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.id, recorded));
    expect(row?.state).toBe("running");
    recordedInstance = (row?.handle as Ec2Handle).instanceId;

    // The audit: every group, bundle and instance the backends made, claimed with its provider id.
    const audit = await cp.db.db.select().from(cpTenantResources);
    const claimed = (subject: string, backend: string) =>
      audit
        .filter((r) => r.subjectId === subject && r.backend === backend && r.state === "claimed")
        .map((r) => r.kind)
        .sort();
    const kinds = ["ec2_bootstrap_secret", "ec2_instance", "ec2_security_group"];
    expect(claimed(recorded, "ec2")).toEqual(kinds);
    expect(claimed(org.orgId, "tenant:ec2")).toEqual(kinds);
    expect(audit.find((r) => r.kind === "ec2_instance" && r.subjectId === recorded)?.providerId).toBe(
      recordedInstance,
    );

    const report = await reconcile();
    expect(report).toMatchObject({ orphans: 0, ghosts: 0, errors: [] });
    expect(report.resources.byBackend.ec2).toBeGreaterThanOrEqual(3);
    expect(report.resources.byOrg[org.orgId]).toBeGreaterThanOrEqual(5);
  });

  it("reports a stray VM tagged as ours as orphans with their provider ids, never one of another environment, and deletes only when enabled past the grace", async () => {
    const stray = ids.next("ws");
    const strayHandle = (await provisioner.provision(
      {
        workspaceId: stray,
        orgId: org.orgId,
        deployment: DEPLOYMENT,
        runtime: "echo",
        tier: 3,
        env: { WORKSPACE_ID: stray },
        secretKeys: [],
        metadata: {},
      },
      null,
    )) as Ec2Handle;
    const otherEnv = await ec2().send(
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
              { Key: EC2_TAGS.orgId, Value: org.orgId },
              { Key: EC2_TAGS.workspaceId, Value: ids.next("ws") },
              { Key: EC2_TAGS.role, Value: "workspace" },
              { Key: EC2_TAGS.deployment, Value: DEPLOYMENT },
              { Key: EC2_TAGS.environment, Value: "staging" },
            ],
          },
        ],
      }),
    );
    const otherEnvInstance = otherEnv.Instances?.[0]?.InstanceId ?? "";
    expect(otherEnvInstance).toMatch(/^i-/);

    // (AWS, and the proxy, show a new instance to filtered listings a moment after it is made.)
    const report = await waitFor("the stray to be listed", async () => {
      const found = await reconcile();
      return found.orphanList.some((o) => o.kind === "ec2_instance") ? found : undefined;
    });
    const orphanIds = report.orphanList.map((o) => o.provider_id);
    expect(orphanIds).toContain(strayHandle.instanceId);
    expect(orphanIds).not.toContain(otherEnvInstance);
    expect(report.orphanList.every((o) => o.workspace_id === stray && !o.deleted)).toBe(true);
    expect(report.orphanList.map((o) => o.kind).sort()).toEqual([
      "ec2_bootstrap_secret",
      "ec2_instance",
      "ec2_security_group",
    ]);
    expect(await liveInstance(strayHandle.instanceId)).toBe(true);

    const stats = await cp.admin("GET", "/cp/admin/stats");
    expect(stats.status).toBe(200);
    expect(AdminStats.parse(stats.body)).toMatchObject({ orphans: 3, ghosts: 0, hung: 0 });

    const settings = cp.deps.settings.reconcile;
    Object.assign(settings, { deleteOrphans: true, orphanGraceMs: 60 * 60_000 });
    const young = await reconcile();
    expect(young.deleted).toBe(0);
    expect(await liveInstance(strayHandle.instanceId)).toBe(true);

    cp.clock.advance(60 * 60_000);
    const old = await reconcile();
    expect(old.deleted).toBeGreaterThanOrEqual(1);
    expect(await liveInstance(strayHandle.instanceId)).toBe(false);
    expect(await liveInstance(otherEnvInstance)).toBe(true);
    expect(await liveInstance(recordedInstance)).toBe(true);
    const clean = await waitFor("the stray to be gone", async () => {
      const found = await reconcile();
      return found.orphans === 0 ? found : undefined;
    });
    expect(clean.ghosts).toBe(0);
    Object.assign(settings, { deleteOrphans: false });
  });

  it("a workspace whose instance was terminated behind its back becomes failed and is a ghost", async () => {
    await ec2().send(new TerminateInstancesCommand({ InstanceIds: [recordedInstance] }));
    const report = await waitFor("the terminated instance to be unlisted", async () => {
      const found = await reconcile();
      return found.ghosts > 0 ? found : undefined;
    });
    expect(report.ghostList).toEqual([
      expect.objectContaining({
        id: recorded,
        subject: "workspace",
        status: "running",
        action: "marked_failed",
      }),
    ]);
    const [row] = await cp.db.db.select().from(cpWorkspaces).where(eq(cpWorkspaces.id, recorded));
    expect(row?.state).toBe("failed");
  });
});
