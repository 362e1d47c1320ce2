/**
 * infra/compose.yaml as a self-hoster's compose implementation reads it: `docker compose config` (the plugin) or
 * Debian's docker-compose 1.29 (the gate installs it), which validates the file against the compose schema and prints
 * it resolved. The published images' names, the wiring between the services, the hardening and the refusal to start
 * without the secrets are checked on that output; then the tenant platform and the control plane (its profile) are
 * run from the file, in one `up`.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_DATABASE_URL } from "../test-support/pg.ts";
import { freePort, REPO_ROOT } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const run = promisify(execFile);
const COMPOSE_FILE = join(REPO_ROOT, "infra/compose.yaml");
const SECRETS = {
  ADMIN_TOKEN: "adm_compose_test_0123456789",
  SECRETS_ENCRYPTION_KEY: "ab".repeat(32),
  POSTGRES_PASSWORD: "pg-compose-test-pw",
};
const CP_SECRETS = {
  CP_ADMIN_API_TOKEN: "cpadm_compose_test_0123456789",
  PROVISION_SHARED_SECRET: "cd".repeat(32),
  CP_SECRETS_ENCRYPTION_KEY: "ef".repeat(32),
};
const CONTROL_PLANE = ["--profile", "control-plane"];

let compose: string[];

/** `docker compose` when the plugin is there, else `docker-compose`; the gate installs the latter. */
async function findCompose(): Promise<string[]> {
  try {
    await run("docker", ["compose", "version"]);
    return ["docker", "compose"];
  } catch {
    await run("docker-compose", ["version"]);
    return ["docker-compose"];
  }
}

async function composeRun(
  project: string,
  files: string[],
  args: string[],
  env: Record<string, string>,
): Promise<string> {
  const [command, ...prefix] = compose;
  const fileArgs = files.flatMap((file) => ["-f", file]);
  const { stdout } = await run(command as string, [...prefix, "-p", project, ...fileArgs, ...args], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
  });
  return stdout;
}

const config = (env: Record<string, string>, profile: string[] = []) =>
  composeRun("molecule", [COMPOSE_FILE], [...profile, "config"], env);

/** The lines of one top-level service in the resolved file, up to the next service. */
function service(resolved: string, name: string): string {
  const match = new RegExp(`\\n  ${name}:\\n((?:    .*\\n|\\s*\\n)+)`).exec(resolved);
  if (!match) throw new Error(`service ${name} not in:\n${resolved}`);
  return match[1] as string;
}

beforeAll(async () => {
  compose = await findCompose();
});

describe("infra/compose.yaml", () => {
  it("is valid and runs the published tenant platform image on PostgreSQL, hardened, with the secrets given", async () => {
    const resolved = await config(SECRETS);
    const tenant = service(resolved, "tenant-platform");
    const postgres = service(resolved, "postgres");
    expect(tenant).toContain("image: molecule/tenant-platform:latest");
    expect(postgres).toMatch(/image: postgres:15\n/);
    expect(tenant).toContain(
      `DATABASE_URL: postgres://molecule:${SECRETS.POSTGRES_PASSWORD}@postgres:5432/molecule`,
    );
    expect(tenant).toContain(`ADMIN_TOKEN: ${SECRETS.ADMIN_TOKEN}`);
    expect(tenant).toContain(`SECRETS_ENCRYPTION_KEY: ${SECRETS.SECRETS_ENCRYPTION_KEY}`);
    expect(tenant).toContain("MOLECULE_ENV: production");
    expect(tenant).toMatch(/depends_on:\n\s+postgres:\n\s+condition: service_healthy/);
    // Workspaces join the network by name and reach the platform there.
    expect(tenant).toContain("WORKSPACE_NETWORK: molecule");
    expect(tenant).toContain("PLATFORM_URL: http://tenant-platform:8080");
    expect(resolved).toMatch(/networks:\n(?:.*\n)*?\s+molecule:\n\s+name: molecule/);
    expect(tenant).toMatch(/ports:\n\s+- 127\.0\.0\.1:8080:8080/);
    expect(tenant).toMatch(/cap_drop:\n\s+- ALL/);
    expect(tenant).toContain("read_only: true");
    expect(tenant).toContain("no-new-privileges:true");
    expect(tenant).toContain("tenant-data:/data");
  });

  it("takes other images, port and bind address from the environment", async () => {
    const resolved = await config({
      ...SECRETS,
      TENANT_IMAGE: "ghcr.io/acme/tenant-platform:1.2.3",
      POSTGRES_IMAGE: "postgres:15.8",
      MOLECULE_PORT: "9090",
      MOLECULE_BIND: "0.0.0.0",
    });
    expect(service(resolved, "tenant-platform")).toContain("image: ghcr.io/acme/tenant-platform:1.2.3");
    expect(service(resolved, "tenant-platform")).toMatch(/- 0\.0\.0\.0:9090:8080/);
    expect(service(resolved, "postgres")).toContain("image: postgres:15.8");
  });

  it("runs the published control plane image on the same PostgreSQL server, in its own database, with its profile", async () => {
    const resolved = await config({ ...SECRETS, ...CP_SECRETS }, CONTROL_PLANE);
    const cp = service(resolved, "control-plane");
    expect(cp).toContain("image: molecule/control-plane:latest");
    // Started only with `--profile control-plane` (or when named), it and its database step alike.
    expect(cp).toMatch(/profiles:\n\s+- control-plane\n/);
    expect(cp).toContain(
      `DATABASE_URL: postgres://molecule:${SECRETS.POSTGRES_PASSWORD}@postgres:5432/molecule_cp`,
    );
    expect(cp).toContain(`CP_ADMIN_API_TOKEN: ${CP_SECRETS.CP_ADMIN_API_TOKEN}`);
    expect(cp).toContain(`PROVISION_SHARED_SECRET: ${CP_SECRETS.PROVISION_SHARED_SECRET}`);
    expect(cp).toContain(`CP_SECRETS_ENCRYPTION_KEY: ${CP_SECRETS.CP_SECRETS_ENCRYPTION_KEY}`);
    expect(cp).toContain("CP_PUBLIC_URL: http://control-plane:8090");
    expect(cp).toContain("MOLECULE_ENV: production");
    // Its own deployment label: the tenant's reconciler never takes the control plane's workspaces for orphans.
    expect(cp).toContain("MOLECULE_DEPLOYMENT: compose-cp");
    expect(cp).toContain("TENANT_URL_TEMPLATE: http://tenant-{slug}:8080");
    expect(cp).toMatch(
      /depends_on:\n\s+control-plane-database:\n\s+condition: service_completed_successfully/,
    );
    expect(cp).toMatch(/ports:\n\s+- 127\.0\.0\.1:8090:8090/);
    expect(cp).toMatch(/cap_drop:\n\s+- ALL/);
    expect(cp).toContain("read_only: true");
    // The database step makes the control plane's database on the same server, as the same user.
    const database = service(resolved, "control-plane-database");
    expect(database).toMatch(/profiles:\n\s+- control-plane\n/);
    expect(database).toMatch(/image: postgres:15\n/);
    expect(database).toContain("CP_POSTGRES_DB: molecule_cp");
    expect(database).toContain("PGHOST: postgres");
    expect(database).toContain(`PGPASSWORD: ${SECRETS.POSTGRES_PASSWORD}`);
  });

  it("the control plane's secrets are checked by the control plane: empty, as the file passes them unset, it exits naming the first", async () => {
    const env = [
      "MOLECULE_ENV=production",
      "CP_ADMIN_API_TOKEN=",
      "PROVISION_SHARED_SECRET=",
      "CP_SECRETS_ENCRYPTION_KEY=",
    ];
    const refused = await run("docker", [
      "run",
      "--rm",
      ...env.flatMap((pair) => ["-e", pair]),
      "molecule/control-plane:latest",
    ]).catch((error: { code: number; stderr: string }) => error);
    expect(refused).toMatchObject({
      code: 1,
      stderr: "molecule control plane: CP_ADMIN_API_TOKEN is required when MOLECULE_ENV=production\n",
    });
  });

  it("refuses to run without each secret, naming it", async () => {
    for (const missing of Object.keys(SECRETS)) {
      const env = Object.fromEntries(Object.entries(SECRETS).filter(([key]) => key !== missing));
      await expect(config(env)).rejects.toMatchObject({ stderr: expect.stringContaining(`set ${missing}`) });
    }
  });
});

/**
 * The shell command of compose.yaml's control-plane-database service (compose's `$$` is a literal `$`), run by `sh`
 * with its PG* variables naming this machine's server, as `user`, with CP_POSTGRES_DB `database`.
 */
async function runDatabaseStep(user: string, database: string): Promise<void> {
  const file = readFileSync(COMPOSE_FILE, "utf8");
  const command =
    /\n {2}control-plane-database:\n(?: {4}.*\n)*? {4}command:\n {6}- sh\n {6}- -c\n {6}- (.+)\n/.exec(
      file,
    )?.[1];
  if (!command) throw new Error("no sh -c command in the control-plane-database service");
  const server = new URL(ADMIN_DATABASE_URL);
  await run("sh", ["-c", command.replaceAll("$$", "$")], {
    env: {
      PATH: process.env.PATH ?? "",
      PGHOST: server.hostname,
      PGPORT: server.port || "5432",
      PGUSER: user,
      PGDATABASE: user,
      CP_POSTGRES_DB: database,
    },
  });
}

async function waitHealthy(what: string, base: string): Promise<void> {
  await waitFor(
    `${what} to answer /health`,
    async () => {
      const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2_000) }).catch(
        () => null,
      );
      return response?.ok ? true : undefined;
    },
    180_000,
    500,
  );
}

/** The tenant's token-free metrics port in the run below. */
const METRICS_PORT = 9464;

/**
 * The tenant-platform and control-plane services run for real from the file, on the locally built
 * molecule/tenant-platform and molecule/control-plane images, with the docker backend on this engine. There is no
 * registry here for the postgres image, so the file's own switch for an external server is used:
 * POSTGRES_HOST/POSTGRES_PORT name this machine's PostgreSQL (through a forwarder on the Docker bridge's gateway
 * address, as it listens on loopback only), the test makes the two databases the server would hold, and
 * `up --no-deps` starts the two services alone.
 */
describe("infra/compose.yaml, run", { timeout: 600_000 }, () => {
  const suffix = randomBytes(4).toString("hex");
  const project = `molecule-e2e-${suffix}`;
  const role = `compose_${suffix}`;
  const network = `molecule-compose-${suffix}`;
  const deployment = `compose-e2e-${suffix}`;
  const cpDeployment = `compose-e2e-cp-${suffix}`;
  const cpDatabase = `${role}_cp`;
  const docker = new Dockerode();
  const dir = mkdtempSync(join(tmpdir(), "molecule-compose-"));
  const override = join(dir, "compose.override.yaml");
  let forwarder: Server;
  let env: Record<string, string>;
  let url: string;
  let cpUrl: string;

  beforeAll(async () => {
    // host-gateway is the default bridge's address (docker0, listed by `ip` even while the link is down).
    const { stdout: docker0 } = await run("ip", ["-4", "-o", "addr", "show", "docker0"]);
    const gateway = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(docker0)?.[1];
    if (!gateway) throw new Error(`no IPv4 address on docker0 for the forwarder to listen on: ${docker0}`);
    forwarder = createServer((client) => {
      const server = connect(
        Number(new URL(ADMIN_DATABASE_URL).port || 5432),
        new URL(ADMIN_DATABASE_URL).hostname,
      );
      client.pipe(server).pipe(client);
      client.on("error", () => server.destroy());
      server.on("error", () => client.destroy());
    });
    await new Promise<void>((resolve) => forwarder.listen(0, gateway, resolve));
    const forwarderPort = (forwarder.address() as { port: number }).port;
    const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      // CREATEDB, as the image's POSTGRES_USER (a superuser) has it, for the file's control plane database step.
      await admin.unsafe(`CREATE ROLE ${role} LOGIN CREATEDB`);
      await admin.unsafe(`CREATE DATABASE ${role} OWNER ${role}`);
    } finally {
      await admin.end();
    }
    // The control plane's database is made by the file's own step (control-plane-database), its command run here with
    // this machine's psql and createdb against the same server (the postgres image that runs it in compose cannot be
    // pulled here); twice, as every `up` runs it: the second finds the database and changes nothing.
    for (let run = 0; run < 2; run++) await runDatabaseStep(role, cpDatabase);
    writeFileSync(
      override,
      [
        "services:",
        ...["tenant-platform", "control-plane"].flatMap((name) => [
          `  ${name}:`,
          '    extra_hosts: ["host.docker.internal:host-gateway"]',
        ]),
        "",
      ].join("\n"),
    );
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const cpPort = await freePort();
    cpUrl = `http://127.0.0.1:${cpPort}`;
    env = {
      ...SECRETS,
      ...CP_SECRETS,
      CP_POSTGRES_DB: cpDatabase,
      CP_PORT: String(cpPort),
      CP_DEPLOYMENT: cpDeployment,
      METRICS_PORT: String(METRICS_PORT),
      POSTGRES_HOST: "host.docker.internal",
      POSTGRES_PORT: String(forwarderPort),
      POSTGRES_USER: role,
      POSTGRES_DB: role,
      MOLECULE_PORT: String(port),
      MOLECULE_DEPLOYMENT: deployment,
      WORKSPACE_NETWORK: network,
      DOCKER_GID: String(statSync("/var/run/docker.sock").gid),
    };
    // One `up` for both services (the profile's, named, and the tenant's), then both must answer.
    await composeRun(
      project,
      [COMPOSE_FILE, override],
      [...CONTROL_PLANE, "up", "-d", "--no-deps", "tenant-platform", "control-plane"],
      env,
    );
    await Promise.all([
      waitHealthy("the compose tenant platform", url),
      waitHealthy("the compose control plane", cpUrl),
    ]).catch(async (error: Error) => {
      const logs = await composeRun(
        project,
        [COMPOSE_FILE, override],
        [...CONTROL_PLANE, "logs", "--tail", "40"],
        env,
      ).catch((e: Error) => e.message);
      throw new Error(`${error.message}\n${logs}`);
    });
  }, 360_000);

  afterAll(async () => {
    // Workspace containers are the platform's, not compose's: removed by their deployment label first.
    for (const label of [deployment, cpDeployment]) {
      const filters = { label: [`molecule.deployment=${label}`] };
      for (const container of await docker.listContainers({ all: true, filters })) {
        await docker.getContainer(container.Id).remove({ force: true });
      }
      for (const volume of (await docker.listVolumes({ filters })).Volumes ?? []) {
        await docker.getVolume(volume.Name).remove({ force: true });
      }
    }
    try {
      if (env) {
        await composeRun(
          project,
          [COMPOSE_FILE, override],
          [...CONTROL_PLANE, "down", "-v", "--remove-orphans"],
          env,
        );
      }
    } finally {
      forwarder?.close();
      const admin = postgres(ADMIN_DATABASE_URL, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${role} WITH (FORCE)`);
        await admin.unsafe(`DROP DATABASE IF EXISTS ${cpDatabase} WITH (FORCE)`);
        await admin.unsafe(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await admin.end();
      }
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("starts the platform on PostgreSQL; the guide's snippet works against it and a workspace comes online on its network", async () => {
    const { stdout } = await run(
      "bash",
      [
        "-c",
        `set -euo pipefail
WORKSPACE=$(curl -s -X POST "\${PLATFORM_URL}/workspaces" -H "Authorization: Bearer \${ADMIN_TOKEN}" \\
  -H "Content-Type: application/json" -d '{"name": "CI Agent", "runtime": "external", "external": true, "url": "https://ci-agent.example.com"}')
WORKSPACE_ID=$(echo $WORKSPACE | jq -r '.id')
echo "$WORKSPACE_ID"`,
      ],
      { env: { PATH: process.env.PATH ?? "", PLATFORM_URL: url, ADMIN_TOKEN: SECRETS.ADMIN_TOKEN } },
    );
    const externalId = stdout.trim();
    expect(externalId).toMatch(/^ws_/);
    // Kept in the PostgreSQL database the file pointed it at.
    const db = postgres(`${ADMIN_DATABASE_URL.replace(/\/[^/]*$/, "")}/${role}`, {
      max: 1,
      onnotice: () => {},
    });
    try {
      expect(await db`SELECT name FROM workspaces WHERE id = ${externalId}`).toEqual([{ name: "CI Agent" }]);
    } finally {
      await db.end();
    }

    // A managed workspace: the platform starts it through the mounted socket on the workspaces' network, the agent
    // registers at http://tenant-platform:8080 and the platform reaches it at its container name.
    const headers = { authorization: `Bearer ${SECRETS.ADMIN_TOKEN}`, "content-type": "application/json" };
    const created = await fetch(`${url}/workspaces`, {
      method: "POST",
      headers,
      body: JSON.stringify({ name: "echo", runtime: "echo" }),
    });
    expect(created.status).toBe(202);
    const workspaceId = ((await created.json()) as { id: string }).id;
    let last: unknown;
    await waitFor(
      `workspace ${workspaceId} to be online`,
      async () => {
        const response = await fetch(`${url}/workspaces/${workspaceId}`, { headers });
        last = await response.json();
        return (last as { status: string }).status === "online" ? true : undefined;
      },
      180_000,
      500,
    ).catch((error: Error) => {
      throw new Error(`${error.message}; last seen ${JSON.stringify(last)}`);
    });
    const container = await docker.getContainer(workspaceId.replace("_", "-")).inspect();
    expect(Object.keys(container.NetworkSettings.Networks)).toEqual([network]);
  });
  it("starts the control plane on the same server, in its own database: /health, and /cp/orgs with its admin token only", async () => {
    const health = await fetch(`${cpUrl}/health`);
    expect(await health.json()).toEqual({ ok: true });
    expect((await fetch(`${cpUrl}/cp/orgs`)).status).toBe(401);
    const wrong = await fetch(`${cpUrl}/cp/orgs`, {
      headers: { authorization: `Bearer ${SECRETS.ADMIN_TOKEN}` },
    });
    expect(wrong.status).toBe(401);
    const listed = await fetch(`${cpUrl}/cp/orgs`, {
      headers: { authorization: `Bearer ${CP_SECRETS.CP_ADMIN_API_TOKEN}` },
    });
    expect(listed.status).toBe(200);
    expect(await listed.json()).toEqual({ orgs: [] });
    // The operator CLI in the image, inside the container, with the container's URL and token.
    const cpContainer = (
      await docker.listContainers({
        filters: {
          label: [`com.docker.compose.project=${project}`, "com.docker.compose.service=control-plane"],
        },
      })
    )[0];
    if (!cpContainer) throw new Error("the compose control plane container is not running");
    const cli = await run("docker", [
      "exec",
      cpContainer.Id,
      "node",
      "/app/dist/cp/molecule-cp.mjs",
      "orgs",
      "list",
    ]);
    expect(cli.stdout).toBe("no orgs\n");
    // Its migrations ran in its own database, the tenant's stayed out of it.
    const db = postgres(`${ADMIN_DATABASE_URL.replace(/\/[^/]*$/, "")}/${cpDatabase}`, {
      max: 1,
      onnotice: () => {},
    });
    try {
      const tables = await db<{ name: string }[]>`
        SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'`;
      const names = tables.map((row) => row.name);
      expect(names).toContain("cp_schema_migrations");
      expect(names).toContain("cp_orgs");
      expect(names).not.toContain("workspaces");
      // Made by the file's database step, as the compose user.
      const [owner] = await db<{ owner: string }[]>`
        SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = current_database()`;
      expect(owner?.owner).toBe(role);
    } finally {
      await db.end();
    }
  });

  it("serves token-free metrics on the tenant's loopback: a scraper in its network namespace reads them, a container beside it cannot", async () => {
    const tenant = (
      await docker.listContainers({
        filters: {
          label: [`com.docker.compose.project=${project}`, "com.docker.compose.service=tenant-platform"],
        },
      })
    )[0];
    if (!tenant) throw new Error("the compose tenant platform container is not running");
    const scrape = (target: string, network: string) =>
      run("docker", [
        "run",
        "--rm",
        "--network",
        network,
        "--entrypoint",
        "/usr/local/bin/node",
        `molecule/workspace-echo:${process.env.WORKSPACE_IMAGE_TAG ?? "latest"}`,
        "-e",
        `fetch(${JSON.stringify(`http://${target}:${METRICS_PORT}/metrics`)}).then(async (r) => console.log(r.status, await r.text()), (e) => console.log("error", e.cause?.code ?? e.message))`,
      ]);
    const sidecar = await scrape("127.0.0.1", `container:${tenant.Id}`);
    expect(sidecar.stdout).toMatch(/^200 /);
    expect(sidecar.stdout).toContain("# TYPE molecule_workspaces gauge");
    const beside = await scrape("tenant-platform", network);
    expect(beside.stdout.trim()).toBe("error ECONNREFUSED");
  });
});
