/**
 * SaaS with EC2 tenants, every part its own process over real HTTP: the control plane (main.ts on PostgreSQL,
 * CP_TENANT_BACKEND=ec2 against moto behind the AWS fault and fidelity proxy, docker workspaces on the host network)
 * and the org's tenant platform. `POST /cp/orgs` makes the tenant's EC2 instance; moto runs nothing, so the test
 * plays the instance's boot: it finds the bundle's ARN in the instance's user-data, reads the bundle from Secrets
 * Manager and starts the tenant platform with that environment (only the port, listen address, data folder and the
 * PLATFORM_URL the boot script derives from the instance's address are this machine's). The tenant reports its boot
 * and the org becomes ready; a workspace runs through the tenant and the control plane; a redeploy sends one SSM
 * command, and the test plays it (the tenant process restarted on the same data with the new image, as the command's
 * restart of the boot unit does), so the redeploy succeeds once the tenant reports ready with it; `DELETE /cp/orgs/:slug`
 * leaves no instance, security group or secret of the org in the account, and no container.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DescribeInstanceAttributeCommand,
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  type Instance,
} from "@aws-sdk/client-ec2";
import {
  GetSecretValueCommand,
  ListSecretsCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { type AwsEmulator, startAwsEmulator } from "@molecule/aws-emulator";
import { deriveTenantSigningKey } from "@molecule/identity";
import Dockerode from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import {
  type AwsNetwork,
  createNetwork,
  TEST_CREDENTIALS,
  TEST_REGION,
} from "../packages/provisioner-core/src/ec2/testkit.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
  uniqueDeployment,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const SLUG = "acme-ec2";
const SHARED_SECRET = randomBytes(32).toString("hex");
const ENVIRONMENT = "staging";
/** The tenant compiles its database driver's WebAssembly at start-up: slow on a loaded machine. */
const SLOW_MS = 240_000;

const docker = new Dockerode();
const deployment = uniqueDeployment();

let aws: AwsEmulator;
let net: AwsNetwork;
let cpDb: TestDatabase;
let tenantDb: TestDatabase;
let cp: ControlPlaneProcess;
let tenant: PlatformProcess | undefined;

const ec2 = () =>
  new EC2Client({ region: TEST_REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });
const secrets = () =>
  new SecretsManagerClient({ region: TEST_REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });

beforeAll(async () => {
  aws = await startAwsEmulator();
  net = await createNetwork(aws.endpoint, `e2e-${randomBytes(3).toString("hex")}`);
  cpDb = await createTestDatabase({ migrations: CP_MIGRATIONS });
  tenantDb = await createTestDatabase();
  const port = await freePort();
  cp = await startControlPlaneProcess({
    env: {
      PORT: String(port),
      CP_PUBLIC_URL: `http://127.0.0.1:${port}`,
      DATABASE_URL: cpDb.url,
      PROVISION_SHARED_SECRET: SHARED_SECRET,
      MOLECULE_DEPLOYMENT: deployment,
      MOLECULE_ENV: ENVIRONMENT,
      CP_WORKSPACE_BACKEND: "docker",
      WORKSPACE_NETWORK: "host",
      CP_TENANT_BACKEND: "ec2",
      AWS_REGION: TEST_REGION,
      AWS_ENDPOINT_URL: aws.endpoint,
      AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
      EC2_VPC_ID: net.vpcId,
      EC2_SUBNET_ID: net.subnetId,
      EIC_ENDPOINT_SG_ID: net.eicGroupId,
      EC2_TENANT_INGRESS_SG_IDS: net.tenantGroupId,
      EC2_TENANT_IAM_PROFILE: net.instanceProfile,
      EC2_AMI: net.imageId,
      TENANT_IMAGE: "ghcr.io/molecule/tenant-platform:e2e",
      TENANT_READY_DEADLINE_SECONDS: String(SLOW_MS / 1000),
      TENANT_DATABASE_URL: tenantDb.url,
      EC2_TERMINATE_DEADLINE_SECONDS: "60",
    },
  });
}, 180_000);

afterAll(async () => {
  await killAllPlatformProcesses();
  const filters = { label: [`molecule.deployment=${deployment}`] };
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(container.Id).remove({ force: true });
  }
  for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(volume.Name).remove({ force: true });
  }
  await aws?.close();
  await cpDb?.drop();
  await tenantDb?.drop();
}, 120_000);

async function instancesOf(orgId: string): Promise<Instance[]> {
  const reply = await ec2().send(
    new DescribeInstancesCommand({ Filters: [{ Name: "tag:OrgID", Values: [orgId] }] }),
  );
  return (reply.Reservations ?? [])
    .flatMap((r) => r.Instances ?? [])
    .filter((i) => i.State?.Name !== "terminated");
}

async function groupsOf(orgId: string) {
  const reply = await ec2().send(
    new DescribeSecurityGroupsCommand({ Filters: [{ Name: "tag:OrgID", Values: [orgId] }] }),
  );
  return reply.SecurityGroups ?? [];
}

async function secretsOf(orgId: string) {
  const reply = await secrets().send(new ListSecretsCommand({}));
  return (reply.SecretList ?? []).filter(
    (s) => !s.DeletedDate && s.Tags?.some((t) => t.Key === "OrgID" && t.Value === orgId),
  );
}

describe("SaaS on EC2: the control plane makes the tenant's instance, the tenant boots from its bundle", () => {
  it(
    "an org becomes ready from its bundle, runs a workspace, and its delete leaves nothing in the account",
    {
      timeout: 900_000,
    },
    async () => {
      const created = await cp.admin("POST", "/cp/orgs", { slug: SLUG, name: "Acme on EC2" });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const orgId: string = created.body.org.id;
      const credential: string = created.body.tenant_credential;
      const adminToken: string = created.body.tenant_admin_token;

      // 1. The provision made one tagged instance; its user-data names the bundle and holds no secret.
      const [instance] = await waitFor("the tenant's instance", async () => {
        const found = await instancesOf(orgId);
        return found.length > 0 ? found : undefined;
      });
      const tags = Object.fromEntries((instance?.Tags ?? []).map((t) => [t.Key, t.Value]));
      expect(tags).toMatchObject({
        OrgID: orgId,
        OrgSlug: SLUG,
        Role: "tenant",
        MOLECULE_ENV: ENVIRONMENT,
        MoleculeDeployment: deployment,
      });
      const attribute = await ec2().send(
        new DescribeInstanceAttributeCommand({ InstanceId: instance?.InstanceId, Attribute: "userData" }),
      );
      const userData = Buffer.from(attribute.UserData?.Value ?? "", "base64").toString("utf8");
      const arn = /SECRET_ARN='([^']+)'/.exec(userData)?.[1];
      expect(arn, userData).toMatch(/^arn:aws:secretsmanager:/);
      for (const secret of [
        credential,
        adminToken,
        deriveTenantSigningKey(SHARED_SECRET, orgId),
        tenantDb.url,
      ]) {
        expect(userData).not.toContain(secret);
      }
      const shown = await waitFor("the provision to finish", async () => {
        const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
        return body.operation?.status === "succeeded" ? body : undefined;
      });
      expect(shown.org.tenant_url).toBe(`http://${instance?.PrivateIpAddress}:8080`);
      // Counted once the provision is over: a describe right after RunInstances may not list the instance yet (AWS
      // is eventually consistent, and the emulator hides a new instance for a moment), so an early count can read 0.
      expect((await instancesOf(orgId)).map((i) => i.InstanceId)).toEqual([instance?.InstanceId]);

      // 2. The instance's boot, played here: the bundle's environment, read with the ARN from user-data.
      const bundle = JSON.parse(
        (await secrets().send(new GetSecretValueCommand({ SecretId: arn }))).SecretString ?? "{}",
      ) as { env: Record<string, string> };
      expect(bundle.env).toMatchObject({
        MOLECULE_ORG_ID: orgId,
        CP_PROVISION_URL: cp.url,
        CP_TENANT_TOKEN: credential,
        ADMIN_TOKEN: adminToken,
        PROVISION_SHARED_SECRET: deriveTenantSigningKey(SHARED_SECRET, orgId),
        DATABASE_URL: tenantDb.url,
        MOLECULE_DEPLOYMENT: deployment,
      });
      expect(
        Object.keys(bundle.env).filter((key) => key.startsWith("AWS_") || key.startsWith("FLY_")),
      ).toEqual([]);
      const port = await freePort();
      const dataDir = mkdtempSync(join(tmpdir(), "molecule-ec2-tenant-"));
      /** The boot unit's container: the bundle's environment, the image it runs, this machine's port and data. */
      const bootTenant = (image: string) =>
        startPlatformProcess({
          env: {
            WORKSPACE_NETWORK: undefined,
            ...bundle.env,
            // This machine's, not the VM's: a free loopback port, a data folder, and the address the boot script
            // would derive from the instance's private IP.
            PORT: String(port),
            HOST: "127.0.0.1",
            MOLECULE_DATA_DIR: dataDir,
            PLATFORM_URL: `http://127.0.0.1:${port}`,
            MOLECULE_IMAGE: image,
          },
          readyTimeoutMs: SLOW_MS,
        });
      tenant = await bootTenant("ghcr.io/molecule/tenant-platform:e2e");
      expect(tenant.adminToken).toBe(adminToken);
      const ready = await waitFor(
        "the org to be ready",
        async () => {
          const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
          return body.org.status === "ready" ? body : undefined;
        },
        SLOW_MS,
      );
      expect(ready.provision_status.events.map((e: { stage: string }) => e.stage)).toEqual([
        "migrated",
        "listening",
        "ready",
      ]);

      // 3. A workspace through the tenant (its backend is the control plane; the control plane's is docker).
      const workspace = await tenant.call("POST", "/workspaces", { name: "on-ec2-tenant", runtime: "echo" });
      expect(workspace.status, JSON.stringify(workspace.body)).toBe(202);
      const workspaceId: string = workspace.body.workspace.id;
      const online = await waitFor(
        `workspace ${workspaceId} to be online`,
        async () => {
          const { body } = (await tenant?.call("GET", `/workspaces/${workspaceId}`)) ?? { body: null };
          if (body?.status === "failed") throw new Error(`workspace failed: ${JSON.stringify(body)}`);
          return body?.status === "online" ? body : undefined;
        },
        SLOW_MS,
      );
      expect(online.backend).toBe("controlplane");
      const container = workspaceId.replace("_", "-");
      expect((await docker.getContainer(container).inspect()).State.Running).toBe(true);

      // 4. Redeploy: one SSM command on the instance. Played here as the VM would run it: the boot unit restarts the
      //    container on the same data with the new image, and the tenant reports ready with it.
      const nextImage = "ghcr.io/molecule/tenant-platform:e2e-next";
      const redeploy = await cp.admin("POST", `/cp/admin/tenants/${SLUG}/redeploy`, { image: nextImage });
      expect(redeploy.status, JSON.stringify(redeploy.body)).toBe(202);
      const command = await waitFor("the redeploy's SSM command", async () =>
        aws.sentCommands().find((sent) => sent.instanceIds.includes(instance?.InstanceId ?? "")),
      );
      expect(command.commands.join("\n")).toContain(`IMAGE='${nextImage}'`);
      await tenant.kill("SIGTERM");
      tenant = await bootTenant(nextImage);
      const redeployed = await waitFor(
        "the redeploy to succeed",
        async () => {
          const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
          if (body.operation?.status === "failed")
            throw new Error(`redeploy failed: ${JSON.stringify(body)}`);
          return body.operation?.kind === "redeploy_tenant" && body.operation.status === "succeeded"
            ? body
            : undefined;
        },
        SLOW_MS,
      );
      expect(redeployed.org).toMatchObject({ status: "ready", tenant_image: nextImage });
      const kept = await tenant.call("GET", `/workspaces/${workspaceId}`);
      expect(kept.body.id).toBe(workspaceId);
      expect(await instancesOf(orgId)).toHaveLength(1);
      expect(aws.counts().RebootInstances).toBeUndefined();

      // 5. Delete the org: the workspace, the instance, its group and its bundle go.
      expect(await groupsOf(orgId)).toHaveLength(1);
      expect(await secretsOf(orgId)).toHaveLength(1);
      const deleted = await cp.admin("DELETE", `/cp/orgs/${SLUG}`, { confirm: SLUG });
      expect(deleted.status, JSON.stringify(deleted.body)).toBe(202);
      await waitFor(
        "the org to be deleted",
        async () => {
          const { body } = await cp.admin("GET", `/cp/orgs/${SLUG}`);
          return body.org.status === "deleted" ? body : undefined;
        },
        SLOW_MS,
      );
      expect(await instancesOf(orgId)).toEqual([]);
      expect(await groupsOf(orgId)).toEqual([]);
      expect(await secretsOf(orgId)).toEqual([]);
      expect(
        await docker.listContainers({ all: true, filters: { label: [`molecule.org_id=${orgId}`] } }),
      ).toEqual([]);

      // No secret reached the control plane's output.
      for (const secret of [
        credential,
        adminToken,
        deriveTenantSigningKey(SHARED_SECRET, orgId),
        SHARED_SECRET,
      ]) {
        expect(cp.output()).not.toContain(secret);
      }
    },
  );
});
