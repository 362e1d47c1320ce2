/**
 * `molecule-cp fleet …` and `tenants redeploy-workspaces` as an operator runs them: the CLI as its own process against
 * the control plane over loopback HTTP, whose rollouts reach real tenant platforms (in process, each serving its API
 * with the org id and admin token the control plane minted for it; workspaces on the real Docker engine). The dry run
 * changes nothing; a rollout prints a line per tenant while it advances, a bar on a terminal, and its results.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { RolloutAccepted, RolloutList } from "@molecule/contracts";
import Dockerode from "dockerode";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../apps/control-plane/src/cli.ts";
import { cpOrgs } from "../apps/control-plane/src/db/schema.ts";
import {
  ADMIN_TOKEN as CP_ADMIN_TOKEN,
  createTestControlPlane,
  realClock,
  type TestControlPlane,
} from "../apps/control-plane/src/testing.ts";
import { createDockerTestPlatform, removeDeployment } from "../test-support/docker-platform.ts";
import type { TestPlatform } from "../test-support/platform.ts";
import { REPO_ROOT } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const ENTRY = `${REPO_ROOT}/apps/control-plane/src/cli.ts`;
const docker = new Dockerode();
const deployment = `e2e-${randomBytes(4).toString("hex")}`;
const CANARY = "cli-fleet-canary";
const OTHERS = ["cli-fleet-b", "cli-fleet-c"];

let cp: TestControlPlane;
let server: ReturnType<typeof serve>;
let cpUrl = "";
const tenants = new Map<string, { platform: TestPlatform; token: string }>();
let workspaceId = "";

interface CpProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/** `molecule-cp …args` as its own process, with the control plane's URL and admin token in its environment. */
function spawnCp(args: string[]): CpProcess {
  const child = spawn(process.execPath, ["--import", "tsx", ENTRY, ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", CP_URL: cpUrl, CP_ADMIN_API_TOKEN: CP_ADMIN_TOKEN },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function cpcli(args: string[]) {
  const run = spawnCp(args);
  const code = await run.exited;
  return { code, stdout: run.stdout(), stderr: run.stderr() };
}

/** An org on the control plane whose tenant platform runs here, ready, reachable at its URL. */
async function tenantFor(slug: string): Promise<TestPlatform> {
  const created = await cp.admin("POST", "/cp/orgs", { slug, name: `Org ${slug}` });
  expect(created.status).toBe(201);
  const orgId: string = created.body.org.id;
  const token: string = created.body.tenant_admin_token;
  const platform = await createDockerTestPlatform({
    docker,
    deployment,
    settings: { orgId, adminToken: token },
  });
  const url = await platform.listen();
  await cp.deps.db.update(cpOrgs).set({ status: "ready", tenantUrl: url }).where(eq(cpOrgs.id, orgId));
  tenants.set(slug, { platform, token });
  return platform;
}

/** The kinds of the workspace's operations on the canary tenant, oldest first. */
async function operationKinds(): Promise<string[]> {
  const tenant = tenants.get(CANARY);
  if (!tenant) throw new Error("no canary tenant");
  const listed = await tenant.platform.call("GET", `/workspaces/${workspaceId}/operations`, {
    token: tenant.token,
  });
  return listed.body.operations.map((operation: { kind: string }) => operation.kind);
}

beforeAll(async () => {
  cp = await createTestControlPlane({ clock: realClock });
  cp.rollouts.start();
  server = serve({ fetch: cp.app.fetch, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  cpUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  // The canary tenant runs one workspace, online; the others run none (their lines still advance).
  const canary = await tenantFor(CANARY);
  for (const slug of OTHERS) await tenantFor(slug);
  const token = tenants.get(CANARY)?.token;
  const created = await canary.call("POST", "/workspaces", {
    token,
    body: { name: "agent", runtime: "echo" },
  });
  expect(created.status).toBe(202);
  workspaceId = created.body.workspace.id;
  await waitFor("the canary's workspace online", async () =>
    (await canary.call("GET", `/workspaces/${workspaceId}`, { token })).body.status === "online"
      ? true
      : undefined,
  );
});

afterAll(async () => {
  if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  await cp?.close();
  for (const tenant of tenants.values()) await tenant.platform.close();
  await removeDeployment(docker, deployment);
});

describe("molecule-cp fleet", { timeout: 300_000 }, () => {
  it("--dry-run prints the plan in rollout order and changes nothing", async () => {
    const before = await operationKinds();
    const plan = await cpcli([
      "fleet",
      "redeploy",
      "--canary",
      CANARY,
      "--batch",
      "1",
      "--soak",
      "1",
      "--dry-run",
    ]);
    expect(plan, plan.stderr).toMatchObject({ code: 0, stderr: "" });
    const lines = plan.stdout.split("\n");
    expect(lines[0]).toBe("dry run: nothing was changed; the rollout would take 3 tenant(s) in this order");
    const header = lines.findIndex((line) => line.startsWith("PHASE"));
    expect(lines[header]).toMatch(/^PHASE\s+TENANT\s+STATUS\s+WORKSPACES\s+ERROR$/);
    expect(lines[header + 1]).toMatch(new RegExp(`^canary\\s+${CANARY}\\s+pending\\s+1 redeploy\\s+-$`));
    expect(lines[header + 2]).toMatch(/^batch 1\s+cli-fleet-b\s+pending\s+none\s+-$/);
    expect(lines[header + 3]).toMatch(/^batch 2\s+cli-fleet-c\s+pending\s+none\s+-$/);
    expect(RolloutList.parse((await cp.admin("GET", "/cp/admin/rollouts")).body).rollouts).toEqual([]);
    expect(await operationKinds()).toEqual(before);
  });

  it("a rollout prints each tenant's line as it advances, then the results; exit 0 once it succeeded", async () => {
    const run = spawnCp(["fleet", "redeploy", "--canary", CANARY, "--batch", "1", "--soak", "1"]);
    // The canary's line is printed while the rollout is still under way: the command is still running.
    await waitFor("the canary's running line", async () =>
      new RegExp(`^ {2}canary\\s+${CANARY} running$`, "m").test(run.stdout()) ? true : undefined,
    );
    expect(run.child.exitCode).toBeNull();
    expect(run.stdout()).not.toMatch(/cli-fleet-[bc] /);
    expect(await run.exited).toBe(0);
    const out = run.stdout();
    expect(out).toMatch(/^rollout op_\S+ (pending|running); interrupting this command stops watching/);
    const at = (pattern: RegExp) => out.split("\n").findIndex((line) => pattern.test(line));
    const canaryDone = at(new RegExp(`^ {2}canary\\s+${CANARY} succeeded \\(1 redeployed\\)$`));
    const soak = at(/^ {2}step soak_started \(.+\): 1 s$/);
    const b = at(/^ {2}batch 1\s+cli-fleet-b succeeded$/);
    const c = at(/^ {2}batch 2\s+cli-fleet-c succeeded$/);
    expect(canaryDone).toBeGreaterThan(0);
    expect(soak).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(canaryDone);
    expect(c).toBeGreaterThan(b);
    expect(out).toMatch(/\nrollout op_\S+ succeeded in \d+ (ms|s|min \d+ s)\n$/);
    expect(out).toMatch(new RegExp(`\\ncanary\\s+${CANARY}\\s+succeeded\\s+1 redeployed\\s+-\\n`));
    expect((await operationKinds()).filter((kind) => kind === "redeploy")).toHaveLength(1);

    // The same rollout read back, and cancelling it now that it has ended: the server's conflict.
    const id = /^rollout (op_\S+)/.exec(out)?.[1] ?? "";
    const listed = await cpcli(["fleet", "list"]);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+fleet\\s+succeeded\\s+3\\s+${CANARY}\\s+`, "m"));
    const shown = await cpcli(["fleet", "status", id]);
    expect(shown.stdout).toMatch(new RegExp(`rollout ${id} succeeded in `));
    const cancel = await cpcli(["fleet", "cancel", id]);
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toMatch(/^molecule-cp: conflict: .*\(HTTP 409, request req_[0-9a-f]{16}\)\n$/);
  });

  it("on a terminal one progress bar is redrawn in place", async () => {
    let stdout = "";
    const code = await runCli(["tenants", "redeploy-workspaces", CANARY], {
      env: { CP_URL: cpUrl, CP_ADMIN_API_TOKEN: CP_ADMIN_TOKEN },
      stdout: (text) => {
        stdout += text;
      },
      stderr: (text) => {
        throw new Error(`unexpected stderr: ${text}`);
      },
      tty: true,
      pollIntervalMs: 200,
    });
    expect(code).toBe(0);
    const frames = stdout.split("\r\x1b[2K").slice(1);
    expect(frames.length).toBeGreaterThan(1);
    expect(frames[0]).toMatch(/^\[-{24}\] 0\/1 tenants {2}/);
    // The last frame is full, and the bar's line is ended before the results.
    expect(frames.at(-1)).toMatch(/^\[#{24}\] 1\/1 tenants {2}.*\n\n/);
    expect(stdout).toMatch(/\nrollout op_\S+ succeeded in /);
    expect((await operationKinds()).filter((kind) => kind === "redeploy")).toHaveLength(2);
  });

  it("--json prints the finished rollout on stdout and the progress on stderr", async () => {
    const result = await cpcli(["tenants", "redeploy-workspaces", "cli-fleet-b", "--json"]);
    expect(result.code).toBe(0);
    const { rollout } = RolloutAccepted.parse(JSON.parse(result.stdout));
    expect(rollout).toMatchObject({ scope: "tenant", status: "succeeded", dry_run: false });
    expect(result.stderr).toMatch(new RegExp(`^rollout ${rollout.id} `));
    expect(result.stderr).toMatch(/^ {2}.+\s+cli-fleet-b succeeded$/m);
  });

  it("a refused rollout exits 1 with the server's error and starts nothing", async () => {
    const before = RolloutList.parse((await cp.admin("GET", "/cp/admin/rollouts")).body).rollouts.length;
    const unknown = await cpcli(["fleet", "redeploy", "--canary", "cli-fleet-nobody"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toBe("");
    expect(unknown.stderr).toMatch(
      /^molecule-cp: bad_request: .*cli-fleet-nobody.*\(HTTP 400, request req_[0-9a-f]{16}\)\n$/,
    );
    const badBatch = await cpcli(["fleet", "redeploy", "--batch", "0"]);
    expect(badBatch.code).toBe(1);
    expect(badBatch.stderr).toMatch(
      /^molecule-cp: bad_request: .*batch_size.*\(HTTP 400, request req_[0-9a-f]{16}\)\n$/,
    );
    const notNumber = await cpcli(["fleet", "redeploy", "--batch", "two"]);
    expect(notNumber).toMatchObject({ code: 2, stdout: "" });
    expect(RolloutList.parse((await cp.admin("GET", "/cp/admin/rollouts")).body).rollouts).toHaveLength(
      before,
    );
  });
});
