/**
 * Tenant stop, start and redeploy on EC2 (moto behind the AWS fault and fidelity proxy), with the tenant backend built
 * from the control plane's configuration. moto runs nothing on an instance, so the test plays the instance's side:
 * when the redeploy's SSM command is seen, the tenant "comes back" by reporting `ready` with the new image through
 * the signed tenant API. Covered: a redeploy that succeeds (one SSM command running the boot unit's script for the
 * new image; no reboot, stop or termination), a command that fails (the operation fails with its output, secrets
 * taken out), a command that never finishes (cancelled and failed at TENANT_COMMAND_DEADLINE_SECONDS), and stop/start
 * as the instance's state in moto.
 */
import { randomBytes } from "node:crypto";
import { DescribeInstancesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { GetCommandInvocationCommand, SSMClient } from "@aws-sdk/client-ssm";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { eq } from "drizzle-orm";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AwsNetwork,
  createNetwork,
  TEST_CREDENTIALS,
  TEST_REGION,
  TestClock,
  testAccess,
} from "../../../packages/provisioner-core/src/ec2/testkit.ts";
import { createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { waitFor } from "../../../test-support/wait.ts";
import { buildTenantBackend } from "./backends.ts";
import { loadConfig } from "./config.ts";
import { CP_MIGRATIONS } from "./db/migrations.ts";
import { cpOrgs } from "./db/schema.ts";
import {
  createTestControlPlane,
  ec2ControlPlaneEnv,
  type TenantIdentity,
  type TestControlPlane,
} from "./testing.ts";

const DEPLOYMENT = "cp-ec2-lifecycle";
const OLD_IMAGE = "ghcr.io/molecule/tenant-platform:1.0.0";
const NEW_IMAGE = "ghcr.io/molecule/tenant-platform:1.1.0";

let aws: AwsEmulator;
let net: AwsNetwork;
let database: TestDatabase;
let cp: TestControlPlane;

beforeAll(async () => {
  // AWS waits and polls (the SSM command's included) follow this clock: a deadline passes without waiting for it.
  const clock = new TestClock();
  aws = await startAwsEmulator({ now: clock.now });
  net = await createNetwork(aws.endpoint, `life-${randomBytes(3).toString("hex")}`);
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  const config = loadConfig(
    ec2ControlPlaneEnv(aws.endpoint, net, {
      MOLECULE_DEPLOYMENT: DEPLOYMENT,
      AWS_REGION: TEST_REGION,
      TENANT_IMAGE: OLD_IMAGE,
      TENANT_COMMAND_DEADLINE_SECONDS: "60",
    }),
  );
  const access = testAccess(aws.endpoint, { clock, sleep: clock.sleep }).access;
  cp = await createTestControlPlane({
    database,
    tenants: buildTenantBackend(config, {
      logger: pino({ level: "silent" }),
      db: database.db,
      aws: { primary: access },
    }),
    settings: { deployment: DEPLOYMENT, tenantReadyDeadlineMs: 30_000 },
  });
}, 180_000);

afterAll(async () => {
  await cp?.close();
  await database?.drop();
  await aws?.close();
});

const ec2 = () =>
  new EC2Client({ region: TEST_REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });

async function instanceState(instanceId: string): Promise<string | undefined> {
  const reply = await ec2().send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
  return reply.Reservations?.[0]?.Instances?.[0]?.State?.Name;
}

async function report(org: TenantIdentity, image: string) {
  const posted = await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage: "ready", image } });
  expect(posted.status, posted.text).toBe(204);
}

/** An org whose tenant instance runs and reported ready with TENANT_IMAGE; its instance id. */
async function readyTenant(slug: string): Promise<{ org: TenantIdentity; instanceId: string }> {
  const org = await cp.createOrg(slug);
  await cp.runner.drain();
  await report(org, OLD_IMAGE);
  const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, org.orgId));
  expect(row?.status).toBe("ready");
  const instanceId = String(row?.tenantHandle?.instanceId);
  expect(await instanceState(instanceId)).toBe("running");
  return { org, instanceId };
}

const orgView = async (slug: string) => (await cp.admin("GET", `/cp/orgs/${slug}`)).body;

describe("redeploying an EC2 tenant through SSM Run Command", () => {
  it("runs the boot unit again with the new image (no reboot) and succeeds once the tenant is ready on it", async () => {
    const { org, instanceId } = await readyTenant("ec2-mover");
    aws.resetCounts();
    const asked = await cp.admin("POST", "/cp/admin/tenants/ec2-mover/redeploy", { image: NEW_IMAGE });
    expect(asked.status, asked.text).toBe(202);
    const draining = cp.runner.drain();

    // The instance's side: the command arrives, the unit restarts the container, the tenant boots on the new image.
    const command = await waitFor("the redeploy command", async () =>
      aws.sentCommands().find((sent) => sent.instanceIds.includes(instanceId)),
    );
    expect(command.documentName).toBe("AWS-RunShellScript");
    const script = command.commands.join("\n");
    expect(script).toContain(`IMAGE='${NEW_IMAGE}'`);
    expect(script).toContain("systemctl restart molecule.service");
    expect(script).toContain('docker pull "$IMAGE"');
    expect(script).not.toContain(org.credential);
    await report(org, NEW_IMAGE);
    await draining;

    const shown = await orgView("ec2-mover");
    expect(shown.operation).toMatchObject({ kind: "redeploy_tenant", status: "succeeded", attempts: 1 });
    expect(shown.operation.steps.map((s: { name: string }) => s.name)).toEqual([
      "image_chosen",
      "command_sent",
      "command_succeeded",
      "image_deployed",
      "tenant_ready",
    ]);
    expect(shown.org).toMatchObject({ status: "ready", tenant_image: NEW_IMAGE });
    const calls = aws.counts();
    expect(calls["ssm.SendCommand"]).toBe(1);
    for (const never of ["RebootInstances", "StopInstances", "TerminateInstances", "RunInstances"]) {
      expect(calls[never], never).toBeUndefined();
    }
    expect(await instanceState(instanceId)).toBe("running");
  });

  it("a command that fails fails the operation for good with its output, secrets taken out", async () => {
    const { org, instanceId } = await readyTenant("ec2-broken");
    aws.scriptCommand({
      instanceId,
      outcome: {
        status: "Failed",
        exitCode: 1,
        output: `Error response from daemon: manifest for ghcr.io/acme/nope:1 not found (token ${org.credential})`,
      },
    });
    await cp.admin("POST", "/cp/admin/tenants/ec2-broken/redeploy", { image: "ghcr.io/acme/nope:1" });
    await cp.runner.drain();
    const shown = await orgView("ec2-broken");
    expect(shown.operation).toMatchObject({ kind: "redeploy_tenant", status: "failed", attempts: 1 });
    expect(shown.operation.error).toMatchObject({ code: "backend_error", retryable: false });
    expect(shown.operation.error.message).toMatch(/SSM command \S+ on i-\S+ ended Failed \(exit 1\)/);
    expect(shown.operation.error.message).toContain("manifest for ghcr.io/acme/nope:1 not found");
    expect(JSON.stringify(shown)).not.toContain(org.credential);
    expect(shown.org).toMatchObject({ status: "ready", tenant_image: OLD_IMAGE });
  });

  it("a command that never finishes is cancelled and fails the operation at the deadline", async () => {
    const { instanceId } = await readyTenant("ec2-stuck");
    aws.scriptCommand({ instanceId, outcome: { status: "InProgress", output: "Pulling fs layer" } });
    await cp.admin("POST", "/cp/admin/tenants/ec2-stuck/redeploy", { image: NEW_IMAGE });
    await cp.runner.drain();
    const shown = await orgView("ec2-stuck");
    expect(shown.operation).toMatchObject({ kind: "redeploy_tenant", status: "failed", attempts: 1 });
    expect(shown.operation.error).toMatchObject({ code: "timeout", retryable: false });
    expect(shown.operation.error.message).toContain("did not finish within 60 s");
    expect(shown.operation.error.message).toContain("Pulling fs layer");
    const command = aws.sentCommands().find((sent) => sent.instanceIds.includes(instanceId));
    const ssm = new SSMClient({ region: TEST_REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });
    const invocation = await ssm.send(
      new GetCommandInvocationCommand({ CommandId: command?.commandId, InstanceId: instanceId }),
    );
    ssm.destroy();
    expect(invocation.Status).toBe("Cancelled");
    expect(shown.org).toMatchObject({ status: "ready", tenant_image: OLD_IMAGE });
  });
});

describe("stopping and starting an EC2 tenant", () => {
  it("stops the instance (never terminates it), refuses a redeploy while stopped, and starts it again", async () => {
    const { org, instanceId } = await readyTenant("ec2-napper");
    const stopping = await cp.admin("POST", "/cp/admin/tenants/ec2-napper/stop");
    expect(stopping.status).toBe(202);
    await cp.runner.drain();
    expect(await instanceState(instanceId)).toBe("stopped");
    let shown = await orgView("ec2-napper");
    expect(shown.org.status).toBe("stopped");
    expect(shown.operation).toMatchObject({ kind: "stop_tenant", status: "succeeded" });
    expect(shown.operation.steps.map((s: { name: string }) => s.name)).toEqual(["instance_stopped"]);
    expect((await cp.admin("POST", "/cp/admin/tenants/ec2-napper/redeploy", {})).status).toBe(409);

    await cp.admin("POST", "/cp/admin/tenants/ec2-napper/start");
    const draining = cp.runner.drain();
    await waitFor("the instance to run again", async () =>
      (await instanceState(instanceId)) === "running" ? true : undefined,
    );
    await report(org, OLD_IMAGE);
    await draining;
    shown = await orgView("ec2-napper");
    expect(shown.operation).toMatchObject({ kind: "start_tenant", status: "succeeded" });
    expect(shown.org.status).toBe("ready");
    const [row] = await cp.db.db.select().from(cpOrgs).where(eq(cpOrgs.id, org.orgId));
    expect(row?.tenantHandle?.instanceId).toBe(instanceId);
  });
});
