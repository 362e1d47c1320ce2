/**
 * A secret never comes back out. Marker secrets (`MARKER-<random>`, and variants with NUL and a line break that no
 * process environment can carry) are sent through every path that carries secrets, each made to fail in a way whose
 * upstream answer quotes the request:
 *
 * - a tenant platform on the docker backend, its engine reached through a proxy that refuses a container create
 *   with an answer quoting the whole create request (env included), and the real engine refusing to start a
 *   container whose secret holds NUL (a secret stored before values were checked), quoting the variable;
 * - `PUT /workspaces/:id/secrets/:key`, then a start that the engine refuses again;
 * - a SaaS tenant whose workspaces the control plane runs on Fly, where the Fly emulator answers the machine create
 *   with an error body quoting the request (`env` included), and a tenant on the Fly backend itself, likewise;
 * - signed control-plane provisions and secret writes with NUL in a value (refused with a 400);
 * - an external workspace's creation with secrets, its registration and heartbeats with a marker as the bearer.
 *
 * Then every output is searched for the markers: every HTTP answer (create, operations, workspace views, lists), the
 * `GET /events` streams, everything each process wrote to its log, and every row of every table of every database.
 * Only the sealed values (ciphertext) and the workspace's own authenticated pull of its secrets may hold them.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, request, type Server } from "node:http";
import { deriveTenantSigningKey, Sealer } from "@molecule/identity";
import { resourceName } from "@molecule/provisioner-core";
import Dockerode from "dockerode";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CP_MIGRATIONS } from "../apps/control-plane/src/db/migrations.ts";
import { type FlyHarness, startFlyHarness } from "../packages/provisioner-core/src/flyio/testkit.ts";
import { type ControlPlaneProcess, startControlPlaneProcess } from "../test-support/control-plane.ts";
import { removeDeployment } from "../test-support/docker-platform.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  freePort,
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
} from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const hex = () => randomBytes(8).toString("hex");
const marker = () => `MARKER-${hex()}`;

/** Every secret sent; `needles` are what must never be found (the random parts, whatever surrounds them). */
const SECRETS = {
  docker: marker(),
  dockerPut: marker(),
  legacyNul: `${marker()}\u0000${hex()}`,
  refusedNul: `${marker()}\u0000${hex()}`,
  refusedPutNul: `${marker()}\u0000tail\n${hex()}`,
  saas: marker(),
  fly: marker(),
  cpNul: `${marker()}\u0000${hex()}`,
  external: marker(),
  bogusBearer: marker(),
};
const needles = Object.values(SECRETS).flatMap((secret) => secret.match(/[0-9a-f]{16}/g) ?? []);

/** A secret the engine proxy and the Fly emulator recognise: its workspace's create is refused, quoting the request. */
const REFUSE = "REFUSE_ME";

const FLY_TOKEN = `fly-leak-${hex()}`;
const CP_APP = "molecule-ws-leak-cp";
const TENANT_APP = "molecule-ws-leak-tenant";
const SHARED_SECRET = randomBytes(32).toString("hex");
const TENANT_KEY = randomBytes(32).toString("hex");
const docker = new Dockerode();

/** Everything read back from the services, by where it came from. */
const outputs: { where: string; text: string }[] = [];
const seen = (where: string, text: string) => outputs.push({ where, text });

let harness: FlyHarness;
let engine: { url: string; refused: number; close(): Promise<void> };
let cp: ControlPlaneProcess;
let dockerTenant: PlatformProcess;
let saasTenant: PlatformProcess;
let flyTenant: PlatformProcess;
let org: { id: string; credential: string };
const databases: TestDatabase[] = [];
const streams: { where: string; text: () => string; stop(): void }[] = [];

/**
 * The docker engine as the platform sees it: every request goes on to the real engine, except a container create
 * whose env carries REFUSE, which is answered 400 with the create request quoted whole (as engines answer a
 * configuration they refuse).
 */
async function startRefusingEngine(): Promise<typeof engine> {
  const socketPath = (process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock").replace(/^unix:\/\//, "");
  const state = { refused: 0 };
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (
        req.method === "POST" &&
        /\/containers\/create/.test(req.url ?? "") &&
        body.includes(`${REFUSE}=`)
      ) {
        state.refused++;
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ message: `container configuration refused: ${body.toString("utf8")}` }));
        return;
      }
      const upstream = request(
        { socketPath, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on("error", () => res.destroy());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `tcp://127.0.0.1:${port}`,
    get refused() {
      return state.refused;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Reads `GET /events` from now on into a buffer. */
async function openEvents(where: string, platform: PlatformProcess) {
  const controller = new AbortController();
  const response = await fetch(`${platform.url}/events`, {
    headers: { authorization: `Bearer ${platform.adminToken}` },
    signal: controller.signal,
  });
  expect(response.status).toBe(200);
  let text = "";
  const reader = response.body?.getReader();
  const decoder = new TextDecoder();
  void (async () => {
    for (;;) {
      const chunk = await reader?.read().catch(() => undefined);
      if (!chunk || chunk.done) return;
      text += decoder.decode(chunk.value, { stream: true });
    }
  })();
  streams.push({ where, text: () => text, stop: () => controller.abort() });
}

/** Calls a platform and keeps the answer's text for the search. */
async function call(platform: PlatformProcess, where: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${platform.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${platform.adminToken}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  seen(`${where}: ${method} ${path} → ${response.status}`, text);
  // biome-ignore lint/suspicious/noExplicitAny: answers are read field by field
  return { status: response.status, body: (text ? JSON.parse(text) : null) as any };
}

async function operationEnds(platform: PlatformProcess, where: string, workspaceId: string, kind: string) {
  return waitFor(`${where}: the ${kind} of ${workspaceId} to end`, async () => {
    const { body } = await call(platform, where, "GET", `/workspaces/${workspaceId}/operations`);
    const operation = body.operations?.find(
      (op: { kind: string; status: string }) =>
        op.kind === kind && (op.status === "failed" || op.status === "succeeded"),
    );
    return operation ? operation : undefined;
  });
}

/** Views every answer a client reads about a workspace, so each is searched. */
async function readEverything(platform: PlatformProcess, where: string, workspaceId: string) {
  await call(platform, where, "GET", `/workspaces/${workspaceId}`);
  await call(platform, where, "GET", "/workspaces");
  await call(platform, where, "GET", "/workspaces?status=failed");
  const { body } = await call(platform, where, "GET", `/workspaces/${workspaceId}/operations`);
  for (const operation of body.operations ?? [])
    await call(platform, where, "GET", `/operations/${operation.id}`);
  await call(platform, where, "GET", `/workspaces/${workspaceId}/secrets`);
}

/** Every row of every table, as JSON text. */
async function dumpDatabase(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const tables = await sql<{ name: string }[]>`
      select table_name as name from information_schema.tables
      where table_schema = 'public' and table_type = 'BASE TABLE'`;
    const out: string[] = [];
    for (const { name } of tables) {
      const rows = await sql.unsafe(`select row_to_json(t)::text as row from "${name}" t`);
      for (const row of rows) out.push(`${name} ${row.row}`);
    }
    return out.join("\n");
  } finally {
    await sql.end();
  }
}

beforeAll(async () => {
  harness = await startFlyHarness({ emulator: { token: FLY_TOKEN, apps: [CP_APP, TENANT_APP] } });
  // A machine create carrying REFUSE is answered with Fly's error envelope quoting the request, env included.
  harness.emulator.inject({
    operation: "Machines_create",
    kind: "status",
    status: 400,
    times: 1_000,
    when: (req) => JSON.stringify(req.body).includes(REFUSE),
    error: (req) => `invalid machine request: ${JSON.stringify(req.body)}`,
  });
  engine = await startRefusingEngine();
  const [cpDb, dockerDb, saasDb, flyDb] = await Promise.all([
    createTestDatabase({ migrations: CP_MIGRATIONS }),
    createTestDatabase(),
    createTestDatabase(),
    createTestDatabase(),
  ]);
  databases.push(cpDb, dockerDb, saasDb, flyDb);
  const saasPort = await freePort();
  [cp, dockerTenant, flyTenant] = await Promise.all([
    startControlPlaneProcess({
      env: {
        DATABASE_URL: cpDb.url,
        PROVISION_SHARED_SECRET: SHARED_SECRET,
        CP_WORKSPACE_BACKEND: "flyio",
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_WORKSPACE_APP: CP_APP,
        FLY_API_BASE_URL: harness.emulator.url,
        CP_TENANT_BACKEND: "external",
        TENANT_URL_TEMPLATE: `http://127.0.0.1:${saasPort}`,
      },
    }),
    startPlatformProcess({
      env: {
        DATABASE_URL: dockerDb.url,
        CONTAINER_BACKEND: "docker",
        DOCKER_HOST: engine.url,
        SECRETS_ENCRYPTION_KEY: TENANT_KEY,
      },
    }),
    startPlatformProcess({
      env: {
        DATABASE_URL: flyDb.url,
        CONTAINER_BACKEND: "flyio",
        FLY_API_TOKEN: FLY_TOKEN,
        FLY_WORKSPACE_APP: TENANT_APP,
        FLY_API_BASE_URL: harness.emulator.url,
      },
    }),
  ]);
  const created = await cp.admin("POST", "/cp/orgs", { slug: "leak-test", name: "Leak test" });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  org = { id: created.body.org.id, credential: created.body.tenant_credential };
  saasTenant = await startPlatformProcess({
    env: {
      PORT: String(saasPort),
      DATABASE_URL: saasDb.url,
      MOLECULE_ENV: "production",
      MOLECULE_ORG_ID: org.id,
      CP_PROVISION_URL: cp.url,
      CP_TENANT_TOKEN: org.credential,
      PROVISION_SHARED_SECRET: deriveTenantSigningKey(SHARED_SECRET, org.id),
      ADMIN_TOKEN: created.body.tenant_admin_token,
    },
  });
  await openEvents("docker tenant events", dockerTenant);
  await openEvents("SaaS tenant events", saasTenant);
  await openEvents("Fly tenant events", flyTenant);
}, 240_000);

afterAll(async () => {
  for (const stream of streams) stream.stop();
  await killAllPlatformProcesses();
  await engine?.close();
  await harness?.close();
  if (dockerTenant) await removeDeployment(docker, dockerTenant.deployment);
  await Promise.all(databases.map((database) => database.drop()));
});

describe("a secret sent through every path never comes back out", () => {
  it("docker: a create the engine refuses quoting the request, then a secret put and a start refused again", async () => {
    const where = "docker tenant";
    const created = await call(dockerTenant, where, "POST", "/workspaces", {
      name: "leaky",
      runtime: "echo",
      secrets: { LEAK_TOKEN: SECRETS.docker, [REFUSE]: "yes" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id: string = created.body.workspace.id;
    const provision = await operationEnds(dockerTenant, where, id, "provision");
    expect(provision.status).toBe("failed");
    expect(provision.error).toEqual({
      code: "invalid_spec",
      message: "docker create container failed (400): the engine refused the container configuration",
    });
    expect(engine.refused).toBeGreaterThan(0);

    const put = await call(dockerTenant, where, "PUT", `/workspaces/${id}/secrets/LEAK_PUT`, {
      value: SECRETS.dockerPut,
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect((await call(dockerTenant, where, "POST", `/workspaces/${id}/start`)).status).toBe(202);
    const start = await operationEnds(dockerTenant, where, id, "start");
    expect(start.status).toBe("failed");
    await readEverything(dockerTenant, where, id);
  });

  it("docker: a NUL secret is refused at the API, and one stored before the check makes the engine refuse the start", async () => {
    const where = "docker tenant";
    const refused = await call(dockerTenant, where, "POST", "/workspaces", {
      name: "nul",
      runtime: "echo",
      secrets: { LEAK_NUL: SECRETS.refusedNul },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: "bad_request" });
    expect(refused.body.error.message).toMatch(/NUL/);

    // A workspace whose secret holds NUL: stored by an earlier version, sealed as the platform seals it.
    const created = await call(dockerTenant, where, "POST", "/workspaces", {
      name: "legacy",
      runtime: "echo",
      secrets: { [REFUSE]: "yes" },
    });
    const id: string = created.body.workspace.id;
    await operationEnds(dockerTenant, where, id, "provision");
    const nulPut = await call(dockerTenant, where, "PUT", `/workspaces/${id}/secrets/LEAK_NUL`, {
      value: SECRETS.refusedPutNul,
    });
    expect(nulPut.status).toBe(400);
    expect((await call(dockerTenant, where, "DELETE", `/workspaces/${id}/secrets/${REFUSE}`)).status).toBe(
      200,
    );
    const { sealed, keyVersion } = Sealer.fromConfig(TENANT_KEY, 1, "").seal(
      SECRETS.legacyNul,
      `${id}:LEAK_NUL`,
    );
    const sql = postgres(databases[1]?.url ?? "", { max: 1, onnotice: () => {} });
    await sql`insert into workspace_secrets (workspace_id, key, sealed, key_version)
              values (${id}, 'LEAK_NUL', ${sealed}, ${keyVersion})`;
    await sql.end();

    expect((await call(dockerTenant, where, "POST", `/workspaces/${id}/start`)).status).toBe(202);
    const start = await operationEnds(dockerTenant, where, id, "start");
    expect(start.status).toBe("failed");
    expect(start.error.code).toBe("invalid_spec");
    // Docker 20.10 takes the container and its runtime refuses to start it; a later engine may refuse the create.
    expect(start.error.message).toMatch(
      /^docker (start container failed \(500\): invalid environment variable|create container failed \(400\): the engine refused the container configuration \(invalid environment variable\))$/,
    );
    // Where the engine kept the container, it recorded its refusal quoting the variable: the leak is real.
    const info = await docker
      .getContainer(resourceName(id))
      .inspect()
      .catch(() => undefined);
    if (info) expect(info.State.Error).toContain(SECRETS.legacyNul.slice(7, 23));
    await readEverything(dockerTenant, where, id);
    expect((await call(dockerTenant, where, "DELETE", `/workspaces/${id}`)).status).toBe(202);
    await operationEnds(dockerTenant, where, id, "destroy");
  });

  it("SaaS: the control plane's Fly backend is refused with an answer quoting the machine config", async () => {
    const where = "SaaS tenant";
    const created = await call(saasTenant, where, "POST", "/workspaces", {
      name: "saas-leaky",
      runtime: "echo",
      secrets: { LEAK_TOKEN: SECRETS.saas, [REFUSE]: "yes" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id: string = created.body.workspace.id;
    const provision = await operationEnds(saasTenant, where, id, "provision");
    expect(provision.status).toBe("failed");
    expect(provision.error.code).toBe("invalid_spec");
    expect(provision.error.message).toMatch(
      /Fly Machines_create failed with HTTP 400: Fly refused the machine configuration/,
    );
    await readEverything(saasTenant, where, id);
    // The control plane's own answers about the same operations, as the tenant reads them.
    const client = cp.tenantClient(org.id, org.credential);
    const sql = postgres(databases[0]?.url ?? "", { max: 1, onnotice: () => {} });
    const rows = await sql<{ id: string }[]>`select id from cp_operations where workspace_id is not null`;
    await sql.end();
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      const reply = await client.call({ op: "operation", method: "GET", path: `/cp/operations/${row.id}` });
      seen(`control plane: GET /cp/operations/${row.id}`, JSON.stringify(reply.body));
    }
    const listed = await client.call({ op: "list", method: "GET", path: "/cp/workspaces" });
    seen("control plane: GET /cp/workspaces", JSON.stringify(listed.body));
    expect(
      (await call(saasTenant, where, "PUT", `/workspaces/${id}/secrets/LEAK_NUL`, { value: SECRETS.cpNul }))
        .status,
    ).toBe(400);
  });

  it("control plane: a signed provision with NUL in an env value is a 400 that stores nothing", async () => {
    const client = cp.tenantClient(org.id, org.credential);
    const body = JSON.stringify({
      workspace_id: "ws_01leaktestleaktestleaktest",
      runtime: "echo",
      tier: 2,
      env: { LEAK_NUL: SECRETS.cpNul },
      secret_keys: ["LEAK_NUL"],
    });
    const response = await fetch(`${cp.url}/cp/workspaces/provision`, {
      method: "POST",
      headers: {
        ...client.signedHeaders("POST", "/cp/workspaces/provision", body),
        "content-type": "application/json",
        "idempotency-key": `leak-${hex()}`,
      },
      body,
    });
    const text = await response.text();
    seen(`control plane: POST /cp/workspaces/provision → ${response.status}`, text);
    expect(response.status, text).toBe(400);
    expect(JSON.parse(text).error).toMatchObject({ code: "bad_request" });
  });

  it("Fly backend on the tenant: a machine create refused with an answer quoting the config", async () => {
    const where = "Fly tenant";
    const created = await call(flyTenant, where, "POST", "/workspaces", {
      name: "fly-leaky",
      runtime: "echo",
      secrets: { LEAK_TOKEN: SECRETS.fly, [REFUSE]: "yes" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id: string = created.body.workspace.id;
    const provision = await operationEnds(flyTenant, where, id, "provision");
    expect(provision.status).toBe("failed");
    expect(provision.error.message).toMatch(
      /Fly Machines_create failed with HTTP 400: Fly refused the machine configuration/,
    );
    await readEverything(flyTenant, where, id);
  });

  it("external: secrets at creation, then registration and heartbeats with a marker for a bearer", async () => {
    const where = "docker tenant (external)";
    const created = await call(dockerTenant, where, "POST", "/workspaces", {
      name: "remote",
      external: true,
      secrets: { LEAK_TOKEN: SECRETS.external },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id: string = created.body.workspace.id;
    for (const path of ["/registry/register", "/registry/heartbeat"]) {
      const response = await fetch(`${dockerTenant.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${SECRETS.bogusBearer}`, "content-type": "application/json" },
        body: JSON.stringify(path.endsWith("register") ? { id } : { workspace_id: id }),
      });
      const text = await response.text();
      seen(`${where}: POST ${path} → ${response.status}`, text);
      expect(response.status).toBe(401);
    }
    const registered = await fetch(`${dockerTenant.url}/registry/register`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${created.body.connection.registration_token}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ id }),
    });
    const { secrets, ...registration } = (await registered.json()) as {
      auth_token: string;
      secrets?: Record<string, string>;
    };
    seen(`${where}: POST /registry/register → ${registered.status}`, JSON.stringify(registration));
    expect(registered.status).toBe(200);
    // The two answers that carry the secret, both to the agent itself (not searched): its registration with its boot
    // token, and its own pull with its own token.
    expect(secrets).toEqual({ LEAK_TOKEN: SECRETS.external });
    const pulled = await fetch(`${dockerTenant.url}/workspaces/${id}/secrets/values`, {
      headers: { authorization: `Bearer ${registration.auth_token}` },
    });
    expect(await pulled.json()).toEqual({ secrets: { LEAK_TOKEN: SECRETS.external } });
    await readEverything(dockerTenant, where, id);
  });

  it("no answer, event, log line or stored row carries any of the secrets", async () => {
    await new Promise((resolve) => setTimeout(resolve, 500)); // the last events and log lines in flight
    for (const stream of streams) seen(stream.where, stream.text());
    seen("control plane log", cp.output());
    seen("docker tenant log", dockerTenant.output());
    seen("SaaS tenant log", saasTenant.output());
    seen("Fly tenant log", flyTenant.output());
    const names = [
      "control plane database",
      "docker tenant database",
      "SaaS tenant database",
      "Fly tenant database",
    ];
    for (const [index, database] of databases.entries()) {
      seen(names[index] ?? "database", await dumpDatabase(database.url));
    }
    // Each stream and log did see the failures (so the search is over real text, not an empty one).
    const text = (where: string) => outputs.find((output) => output.where === where)?.text ?? "";
    expect(text("docker tenant events")).toContain("operation.finished");
    expect(text("SaaS tenant events")).toContain("operation.finished");
    expect(text("docker tenant log")).toContain("operation failed");
    expect(text("control plane log")).toContain("operation failed");
    expect(text("control plane database")).toContain("Machines_create");

    const leaks = outputs.flatMap(({ where, text }) =>
      needles
        .filter((needle) => text.includes(needle))
        .map((needle) => {
          const at = text.indexOf(needle);
          return `${where}: …${text.slice(Math.max(0, at - 120), at + 40)}…`;
        }),
    );
    expect([...new Set(leaks)]).toEqual([]);
  });
});
