/**
 * The docker tenant backend against the real engine and the real tenant platform image
 * (molecule/tenant-platform:latest, built by test-support/global-setup.ts).
 *
 * The tenants here run in *standalone* mode, not the control-plane mode production uses: without MOLECULE_ORG_ID
 * and CONTAINER_BACKEND the platform selects its docker backend, whose client connects to the engine only when a
 * workspace is created, so it starts, migrates its embedded database and answers /health with no docker socket
 * and no control plane. MOLECULE_ENV=production makes ADMIN_TOKEN and SECRETS_ENCRYPTION_KEY mandatory, as they
 * are for a SaaS tenant; both are declared secret so the test can check they never reach labels or logs.
 */
import { randomBytes } from "node:crypto";
import { type AddressInfo, createServer } from "node:net";
import { createDockerClient, ProvisionerError } from "@molecule/provisioner-core";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_DATABASE_URL } from "../../../../test-support/pg.ts";
import type { TenantSpec } from "./backend.ts";
import { createTenantDatabases } from "./databases.ts";
import {
  createDockerTenantBackend,
  type DockerTenantHandle,
  TENANT_PORT_LABEL,
  tenantContainerName,
  tenantVolumeName,
} from "./docker.ts";

const IMAGE = "molecule/tenant-platform:latest";
const docker = createDockerClient();
const deployment = `test-tenants-${randomBytes(4).toString("hex")}`;
const otherDeployment = `${deployment}-other`;

const logLines: string[] = [];
const logger = {
  info: (fields: Record<string, unknown>, message: string) =>
    logLines.push(`${message} ${JSON.stringify(fields)}`),
  warn: (fields: Record<string, unknown>, message: string) =>
    logLines.push(`${message} ${JSON.stringify(fields)}`),
  error: (fields: Record<string, unknown>, message: string) =>
    logLines.push(`${message} ${JSON.stringify(fields)}`),
};

function makeSpec(overrides: Partial<TenantSpec> = {}): TenantSpec {
  const suffix = randomBytes(4).toString("hex");
  return {
    orgId: `org_test${suffix}`,
    slug: `t-${suffix}`,
    deployment,
    env: {
      MOLECULE_ENV: "production",
      ADMIN_TOKEN: `admin-${randomBytes(16).toString("hex")}`,
      SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
      LOG_LEVEL: "warn",
    },
    secretKeys: ["ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY"],
    isCanary: false,
    ...overrides,
  };
}

/**
 * Polls GET <url>/health until it answers 200; fails with the container's last log lines otherwise. The embedded
 * database compiles its WebAssembly at every start, which takes seconds on an idle machine and far longer on a busy
 * one: the deadline is generous, and only a platform that never answers fails.
 */
async function waitForHealth(url: string, containerId: string): Promise<void> {
  const deadline = Date.now() + 180_000;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) {
        expect(await response.json()).toEqual({ ok: true });
        return;
      }
      last = `HTTP ${response.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const logs = await docker.getContainer(containerId).logs({ stdout: true, stderr: true, tail: 30 });
  throw new Error(`tenant at ${url} never became healthy (${last}); logs:\n${logs.toString()}`);
}

/** A port the kernel hands out now, closed again. */
async function ephemeral(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

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

/** Removes whatever a failed test left behind; a failure to remove is a test failure, never silent. */
async function cleanup(): Promise<void> {
  for (const dep of [deployment, otherDeployment]) {
    const filters = { label: [`molecule.deployment=${dep}`] };
    for (const c of await docker.listContainers({ all: true, filters })) {
      await docker.getContainer(c.Id).remove({ force: true });
    }
    for (const v of (await docker.listVolumes({ filters })).Volumes ?? []) {
      await docker.getVolume(v.Name).remove();
    }
  }
}

beforeAll(async () => {
  await docker.getImage(IMAGE).inspect(); // built by the global setup; a missing image fails here, clearly
});
afterAll(cleanup);

describe("docker tenant backend (host network)", { timeout: 400_000 }, () => {
  const backend = createDockerTenantBackend({
    docker,
    image: IMAGE,
    network: "host",
    deployment,
    environment: "production",
    logger,
  });

  it("provisions a tenant that answers /health, adopts it on a second provision, and destroys it", async () => {
    const spec = makeSpec();
    const steps: string[] = [];
    const first = await backend.provision(spec, null, { step: (name) => steps.push(name) });
    const handle = first.handle as DockerTenantHandle;
    expect(steps).toEqual(["image_ready", "volume_ready", "container_created", "container_started"]);
    expect(handle).toMatchObject({ backend: "docker", volume: tenantVolumeName(spec.slug) });
    expect(first.url).toBe(`http://127.0.0.1:${handle.port}`);
    await waitForHealth(first.url, handle.containerId);

    const info = await docker.getContainer(handle.containerId).inspect();
    expect(info.Name).toBe(`/${tenantContainerName(spec.slug)}`);
    expect(info.Config.Labels).toMatchObject({
      "molecule.managed": "true",
      "molecule.org_id": spec.orgId,
      "molecule.deployment": deployment,
      "molecule.kind": "tenant",
      "molecule.environment": "production",
      [TENANT_PORT_LABEL]: String(handle.port),
    });
    expect((await docker.getVolume(handle.volume).inspect()).Labels).toMatchObject({
      "molecule.org_id": spec.orgId,
      "molecule.environment": "production",
    });
    expect(info.HostConfig).toMatchObject({
      NetworkMode: "host",
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Init: true,
      Privileged: false,
      ReadonlyRootfs: true,
      RestartPolicy: { Name: "unless-stopped" },
    });
    expect(JSON.stringify(info.Mounts)).not.toContain("docker.sock");
    expect(info.Mounts).toEqual([
      expect.objectContaining({ Type: "volume", Name: tenantVolumeName(spec.slug), Destination: "/data" }),
    ]);
    expect(info.Config.Env).toEqual(
      expect.arrayContaining([
        `PORT=${handle.port}`,
        "HOST=127.0.0.1",
        `PLATFORM_URL=http://127.0.0.1:${handle.port}`,
        "WORKSPACE_NETWORK=host",
        "MOLECULE_DATA_DIR=/data",
      ]),
    );
    // Secret values reach the container's environment and nothing else.
    const secrets = spec.secretKeys.map((key) => spec.env[key] as string);
    const labelText = JSON.stringify(info.Config.Labels);
    const volumeLabels = JSON.stringify((await docker.getVolume(handle.volume).inspect()).Labels);
    for (const secret of secrets) {
      expect(info.Config.Env).toContain(`${spec.secretKeys[secrets.indexOf(secret)]}=${secret}`);
      expect(labelText).not.toContain(secret);
      expect(volumeLabels).not.toContain(secret);
      expect(logLines.join("\n")).not.toContain(secret);
    }
    expect(logLines.join("\n")).toContain("ADMIN_TOKEN=[redacted]");

    // A second provision (a retry, with or without the stored handle) adopts everything.
    const again = await backend.provision(spec, null);
    expect(again).toEqual(first);
    expect(await backend.provision(spec, first.handle)).toEqual(first);

    expect(await backend.status({ orgId: spec.orgId, slug: spec.slug, handle: first.handle })).toEqual({
      state: "running",
    });
    const managed = await backend.listManaged();
    expect(managed).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          kind: "container",
          id: handle.containerId,
          orgId: spec.orgId,
          state: "running",
        }),
        expect.objectContaining({ kind: "volume", id: handle.volume, orgId: spec.orgId }),
      ]),
    );

    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle: first.handle });
    expect(await exists("container", tenantContainerName(spec.slug))).toBe(false);
    expect(await exists("volume", tenantVolumeName(spec.slug))).toBe(false);
    expect((await backend.listManaged()).filter((r) => r.orgId === spec.orgId)).toEqual([]);
    expect(await backend.status({ orgId: spec.orgId, slug: spec.slug, handle: null })).toMatchObject({
      state: "missing",
    });
    // Already gone is success.
    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle: first.handle });
  });

  it("after a lost container, provision with the stored handle reuses the volume and the port", async () => {
    const spec = makeSpec();
    const first = await backend.provision(spec, null);
    const handle = first.handle as DockerTenantHandle;
    await waitForHealth(first.url, handle.containerId);
    await docker.getContainer(handle.containerId).remove({ force: true });
    expect(await backend.status({ orgId: spec.orgId, slug: spec.slug, handle })).toMatchObject({
      state: "missing",
    });

    const second = await backend.provision(spec, handle);
    const secondHandle = second.handle as DockerTenantHandle;
    expect(secondHandle.containerId).not.toBe(handle.containerId);
    expect(secondHandle).toMatchObject({ volume: handle.volume, port: handle.port });
    expect(second.url).toBe(first.url);
    await waitForHealth(second.url, secondHandle.containerId);
    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle: secondHandle });
    expect(await exists("volume", handle.volume)).toBe(false);
  });

  it("reports a stopped tenant as stopped and starts it again on provision", async () => {
    const spec = makeSpec();
    const first = await backend.provision(spec, null);
    const handle = first.handle as DockerTenantHandle;
    await waitForHealth(first.url, handle.containerId);
    await docker.getContainer(handle.containerId).stop({ t: 10 });
    const stopped = await backend.status({ orgId: spec.orgId, slug: spec.slug, handle });
    expect(stopped.state).toBe("stopped");
    expect(stopped.detail).toMatch(/exited with code/);

    expect(await backend.provision(spec, handle)).toEqual(first);
    await waitForHealth(first.url, handle.containerId);
    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle });
  });

  it("refuses to adopt a tenant of another deployment or org, and leaves it alone", async () => {
    const spec = makeSpec();
    const other = createDockerTenantBackend({
      docker,
      image: IMAGE,
      network: "host",
      deployment: otherDeployment,
      logger,
    });
    const theirs = await other.provision({ ...spec, deployment: otherDeployment }, null);

    await expect(backend.provision(spec, null)).rejects.toMatchObject({ code: "conflict", retryable: false });
    await expect(backend.provision({ ...spec, orgId: "org_someoneelse" }, null)).rejects.toMatchObject({
      code: "conflict",
    });
    await expect(backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle: null })).rejects.toMatchObject(
      {
        code: "conflict",
      },
    );
    expect((await backend.status({ orgId: spec.orgId, slug: spec.slug, handle: null })).state).toBe(
      "unknown",
    );
    expect((await backend.listManaged()).filter((r) => r.orgId === spec.orgId)).toEqual([]);
    expect(await exists("container", tenantContainerName(spec.slug))).toBe(true);

    await other.destroy({ orgId: spec.orgId, slug: spec.slug, handle: theirs.handle });
    expect(await exists("container", tenantContainerName(spec.slug))).toBe(false);
  });

  it("lists only this environment's tenants: another environment's are never listed, unlabelled older ones are", async () => {
    const labels = (orgId: string, environment?: string) => ({
      "molecule.managed": "true",
      "molecule.org_id": orgId,
      "molecule.deployment": deployment,
      "molecule.kind": "tenant",
      ...(environment ? { "molecule.environment": environment } : {}),
    });
    const staging = makeSpec();
    const older = makeSpec();
    // Made by another environment's control plane of the same deployment name, and by a release before the label.
    for (const [spec, environment] of [
      [staging, "staging"],
      [older, undefined],
    ] as const) {
      await docker.createVolume({
        Name: tenantVolumeName(spec.slug),
        Labels: labels(spec.orgId, environment),
      });
      await docker.createContainer({
        name: tenantContainerName(spec.slug),
        Image: IMAGE,
        Labels: labels(spec.orgId, environment),
        HostConfig: { NetworkMode: "none" },
      });
    }
    const listed = await backend.listManaged();
    expect(listed.filter((r) => r.orgId === staging.orgId)).toEqual([]);
    expect(
      listed
        .filter((r) => r.orgId === older.orgId)
        .map((r) => r.kind)
        .sort(),
    ).toEqual(["container", "volume"]);
    const stagingBackend = createDockerTenantBackend({
      docker,
      image: IMAGE,
      network: "host",
      deployment,
      environment: "staging",
      logger,
    });
    expect(
      (await stagingBackend.listManaged())
        .filter((r) => r.orgId === staging.orgId)
        .map((r) => r.kind)
        .sort(),
    ).toEqual(["container", "volume"]);
    expect(await exists("container", tenantContainerName(staging.slug))).toBe(true);
    for (const spec of [staging, older]) {
      await docker.getContainer(tenantContainerName(spec.slug)).remove({ force: true });
      await docker.getVolume(tenantVolumeName(spec.slug)).remove();
    }
  });

  it("picks host ports from portRange or hostPortAllocator, never one another tenant holds", async () => {
    // a port someone else listens on, and one nobody does
    const held = createServer();
    await new Promise<void>((resolve) => held.listen(0, "127.0.0.1", resolve));
    const heldPort = (held.address() as AddressInfo).port;
    const freeServer = createServer();
    await new Promise<void>((resolve) => freeServer.listen(0, "127.0.0.1", resolve));
    const freePort = (freeServer.address() as AddressInfo).port;
    await new Promise((resolve) => freeServer.close(resolve));
    try {
      const busy = createDockerTenantBackend({
        docker,
        image: IMAGE,
        network: "host",
        deployment,
        portRange: { min: heldPort, max: heldPort },
      });
      const refused = makeSpec();
      await expect(busy.provision(refused, null)).rejects.toMatchObject({
        code: "capacity",
        retryable: true,
      });
      expect(await exists("container", tenantContainerName(refused.slug))).toBe(false);
      await backend.destroy({ orgId: refused.orgId, slug: refused.slug, handle: null }); // its volume

      const ranged = createDockerTenantBackend({
        docker,
        image: IMAGE,
        network: "host",
        deployment,
        portRange: { min: freePort, max: freePort },
      });
      const first = makeSpec();
      const firstHandle = (await ranged.provision(first, null)).handle as DockerTenantHandle;
      expect(firstHandle.port).toBe(freePort);

      const seen: number[][] = [];
      const allocated = createDockerTenantBackend({
        docker,
        image: IMAGE,
        network: "host",
        deployment,
        hostPortAllocator: async (taken) => {
          seen.push([...taken]);
          return ephemeral();
        },
      });
      const second = makeSpec();
      const secondHandle = (await allocated.provision(second, null)).handle as DockerTenantHandle;
      expect(seen).toHaveLength(1);
      expect(seen[0]).toContain(freePort);
      expect(secondHandle.port).not.toBe(freePort);
      // The range's only port is now a tenant's: another org gets no port there, even while that tenant is down.
      await docker.getContainer(firstHandle.containerId).stop({ t: 10 });
      const third = makeSpec();
      await expect(ranged.provision(third, null)).rejects.toMatchObject({ code: "capacity" });
      for (const spec of [first, second, third]) {
        await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle: null });
      }
    } finally {
      await new Promise((resolve) => held.close(resolve));
    }
  });

  it("rejects a bad slug or a spec of another deployment before touching the engine", async () => {
    await expect(backend.provision(makeSpec({ slug: "Bad_Slug" }), null)).rejects.toMatchObject({
      code: "invalid_spec",
    });
    await expect(backend.provision(makeSpec({ deployment: "elsewhere" }), null)).rejects.toMatchObject({
      code: "invalid_spec",
    });
  });

  it("maps an unreachable engine to retryable backend_unavailable, and status to unknown", async () => {
    const broken = createDockerTenantBackend({
      docker: createDockerClient({ socketPath: "/nonexistent/docker.sock" }),
      image: IMAGE,
      network: "host",
      deployment,
    });
    const spec = makeSpec();
    const failure = await broken.provision(spec, null).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ProvisionerError);
    expect(failure).toMatchObject({ code: "backend_unavailable", retryable: true });
    await expect(broken.listManaged()).rejects.toMatchObject({ code: "backend_unavailable" });
    await expect(broken.destroy({ orgId: spec.orgId, slug: spec.slug, handle: null })).rejects.toMatchObject({
      retryable: true,
    });
    const status = await broken.status({ orgId: spec.orgId, slug: spec.slug, handle: null });
    expect(status.state).toBe("unknown");
    expect(status.detail).toMatch(/unreachable/);
  });
});

describe("docker tenant backend (bridge network)", { timeout: 400_000 }, () => {
  it("publishes the tenant on the host's loopback and points PLATFORM_URL and the CP URL at the host gateway", async () => {
    const backend = createDockerTenantBackend({
      docker,
      image: IMAGE,
      network: "bridge",
      deployment,
      logger,
    });
    const spec = makeSpec();
    spec.env.CP_PROVISION_URL = "http://127.0.0.1:8090";
    const instance = await backend.provision(spec, null);
    const handle = instance.handle as DockerTenantHandle;
    await waitForHealth(instance.url, handle.containerId);

    const info = await docker.getContainer(handle.containerId).inspect();
    expect(info.HostConfig.NetworkMode).toBe("bridge");
    expect(info.HostConfig.PortBindings).toEqual({
      [`${handle.port}/tcp`]: [{ HostIp: "127.0.0.1", HostPort: String(handle.port) }],
    });
    expect(info.HostConfig.ExtraHosts).toEqual(["host.docker.internal:host-gateway"]);
    expect(info.Config.Env).toEqual(
      expect.arrayContaining([
        "HOST=0.0.0.0",
        `PLATFORM_URL=http://host.docker.internal:${handle.port}`,
        "CP_PROVISION_URL=http://host.docker.internal:8090",
      ]),
    );
    expect(info.Config.Env?.some((entry) => entry.startsWith("WORKSPACE_NETWORK="))).toBe(false);
    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle });
    expect(await exists("volume", handle.volume)).toBe(false);
  });
});

/** Runs node in the workspace image on `network`, fetching `url`; returns the exit code and what it printed. */
async function fetchFromContainer(network: string, url: string): Promise<{ code: number; output: string }> {
  const script =
    "fetch(process.argv[1]).then(async (r) => { console.log(r.status, await r.text()); process.exit(r.ok ? 0 : 1); })" +
    ".catch((e) => { console.log(String(e.cause ?? e)); process.exit(2); })";
  const container = await docker.createContainer({
    Image: "molecule/workspace-echo:latest",
    Entrypoint: ["/usr/local/bin/node", "-e", script, url],
    HostConfig: { NetworkMode: network },
  });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const logs = await container.logs({ stdout: true, stderr: true });
    // One multiplexed log frame per line; its 8-byte header precedes the text.
    return { code: StatusCode, output: logs.toString() };
  } finally {
    await container.remove({ force: true });
  }
}

describe("docker tenant backend (user-defined network)", { timeout: 400_000 }, () => {
  const network = `molecule-test-${randomBytes(4).toString("hex")}`;

  afterAll(async () => {
    await docker
      .getNetwork(network)
      .remove()
      .catch(() => {});
  });

  it("creates the network, joins it by name, and a container on it reaches /health at the PLATFORM_URL workspaces get", async () => {
    const backend = createDockerTenantBackend({ docker, image: IMAGE, network, deployment, logger });
    const spec = makeSpec();
    const instance = await backend.provision(spec, null);
    const handle = instance.handle as DockerTenantHandle;
    await waitForHealth(instance.url, handle.containerId);

    expect((await docker.getNetwork(network).inspect()).Labels).toMatchObject({ "molecule.managed": "true" });
    const info = await docker.getContainer(handle.containerId).inspect();
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([network]);
    const platformUrl = `http://${tenantContainerName(spec.slug)}:${handle.port}`;
    expect(info.Config.Env).toEqual(expect.arrayContaining(["HOST=0.0.0.0", `PLATFORM_URL=${platformUrl}`]));

    const probe = await fetchFromContainer(network, `${platformUrl}/health`);
    expect(probe).toEqual({ code: 0, output: expect.stringContaining('200 {"ok":true}') });
    // Off the network the name means nothing: the address is the network's, not the host's.
    const outside = await fetchFromContainer("bridge", `${platformUrl}/health`);
    expect(outside.code).toBe(2);

    // A second tenant on the same network: the network is reused, not made twice.
    const second = makeSpec();
    const secondInstance = await backend.provision(second, null);
    const secondHandle = secondInstance.handle as DockerTenantHandle;
    expect(
      (await docker.listNetworks({ filters: { name: [network] } })).filter((n) => n.Name === network),
    ).toHaveLength(1);

    await backend.destroy({ orgId: spec.orgId, slug: spec.slug, handle });
    await backend.destroy({ orgId: second.orgId, slug: second.slug, handle: secondHandle });
    expect(await exists("volume", handle.volume)).toBe(false);
  });
});

describe("docker tenant backend with a database per org", { timeout: 400_000 }, () => {
  const databases = createTenantDatabases({
    adminUrl: ADMIN_DATABASE_URL,
    passwordSecret: randomBytes(32).toString("hex"),
    deployment,
  });
  const backend = createDockerTenantBackend({
    docker,
    image: IMAGE,
    network: "host",
    deployment,
    logger,
    databases,
  });

  it("hands the tenant DATABASE_URL of its own database, migrated by the tenant, and drops it with the tenant", async () => {
    const spec = makeSpec();
    const steps: string[] = [];
    const instance = await backend.provision(spec, null, { step: (name) => steps.push(name) });
    const handle = instance.handle as DockerTenantHandle;
    expect(steps).toEqual([
      "image_ready",
      "volume_ready",
      "database_ready",
      "container_created",
      "container_started",
    ]);
    await waitForHealth(instance.url, handle.containerId);

    const name = databases.nameFor(spec);
    const password = databases.passwordFor(spec);
    const info = await docker.getContainer(handle.containerId).inspect();
    const databaseUrl = info.Config.Env.find((entry) => entry.startsWith("DATABASE_URL="))?.slice(13);
    expect(databaseUrl).toBe(await databases.ensure(spec));
    const tenantDb = postgres(databaseUrl as string, { max: 1, onnotice: () => {} });
    try {
      const tables = await tenantDb`SELECT tablename FROM pg_tables WHERE tablename = 'workspaces'`;
      expect(tables).toHaveLength(1);
    } finally {
      await tenantDb.end();
    }
    // The credential is in the tenant's environment only.
    expect(JSON.stringify(info.Config.Labels)).not.toContain(password);
    expect(logLines.join("\n")).not.toContain(password);
    expect(logLines.join("\n")).toContain("DATABASE_URL=[redacted]");

    const ref = { orgId: spec.orgId, slug: spec.slug, handle: instance.handle };
    // A retried provision adopts the container and keeps the database and its credential.
    expect(await backend.provision(spec, instance.handle)).toEqual(instance);

    await backend.destroy(ref);
    const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      expect(await admin`SELECT 1 FROM pg_database WHERE datname = ${name}`).toHaveLength(0);
      expect(await admin`SELECT 1 FROM pg_roles WHERE rolname = ${name}`).toHaveLength(0);
    } finally {
      await admin.end();
    }
    await backend.destroy(ref);
  });
});
