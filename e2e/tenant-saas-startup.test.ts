/**
 * The tenant platform's start-up in controlplane mode, as a real process: the refusals (cloud credentials, missing
 * control-plane credential, unreachable control plane) and a start against the in-test control-plane emulator that
 * posts its boot events and runs a workspace through the control plane.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  type CpEmulator,
  startControlPlaneEmulator,
  TEST_SIGNING_KEY,
  TEST_TENANT_TOKEN,
} from "../packages/provisioner-core/src/controlplane/testkit.ts";
import { freePort } from "../test-support/net.ts";
import { killAllPlatformProcesses, spawnPlatform, startPlatformProcess } from "../test-support/process.ts";
import { waitFor } from "../test-support/wait.ts";

const emulators: CpEmulator[] = [];
afterEach(async () => {
  await killAllPlatformProcesses();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});
afterAll(killAllPlatformProcesses);

async function emulator(): Promise<CpEmulator> {
  const e = await startControlPlaneEmulator();
  emulators.push(e);
  return e;
}

function saasEnv(cpUrl: string): Record<string, string> {
  return {
    MOLECULE_ORG_ID: "org_01jcptest000000000000000000",
    CP_PROVISION_URL: cpUrl,
    CP_TENANT_TOKEN: TEST_TENANT_TOKEN,
    PROVISION_SHARED_SECRET: TEST_SIGNING_KEY,
    ADMIN_TOKEN: "adm_saas_startup_test_token_0001",
    SECRETS_ENCRYPTION_KEY: "a".repeat(64),
    HOST: "127.0.0.1",
    PORT: "0",
  };
}

/** Runs the platform until it exits; returns its exit code and one-line output. */
async function runToExit(env: Record<string, string | undefined>) {
  const spawned = spawnPlatform(env);
  const exit = await spawned.waitForExit(60_000);
  return { code: exit.code, output: spawned.output() };
}

describe("tenant platform start-up in controlplane mode", () => {
  it("refuses to start while holding cloud credentials, naming them and not their values", async () => {
    const { code, output } = await runToExit({
      ...saasEnv("http://127.0.0.1:1"),
      FLY_API_TOKEN: "fly-token-value-xyz",
      AWS_SECRET_ACCESS_KEY: "aws-secret-value-xyz",
    });
    expect(code).not.toBe(0);
    expect(output.trim()).toBe(
      "molecule: a tenant in controlplane mode must not hold cloud credentials; remove FLY_API_TOKEN, AWS_SECRET_ACCESS_KEY from its environment (the control plane alone holds Fly and AWS credentials)",
    );
    expect(output).not.toContain("fly-token-value-xyz");
    expect(output).not.toContain("aws-secret-value-xyz");
  });

  it("refuses to start without its control-plane credential", async () => {
    const { code, output } = await runToExit({
      ...saasEnv("http://127.0.0.1:1"),
      CP_TENANT_TOKEN: undefined,
    });
    expect(code).not.toBe(0);
    expect(output.trim()).toMatch(/^molecule: CP_TENANT_TOKEN is required in controlplane mode/);
  });

  it("gives up with one line when the control plane never answers", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const { code, output } = await runToExit({
      ...saasEnv(url),
      CP_STARTUP_WAIT_SECONDS: "1",
      LOG_LEVEL: "silent",
    });
    expect(code).not.toBe(0);
    expect(output.trim()).toMatch(
      new RegExp(`^molecule: the control plane at ${url} did not answer GET /cp/tenants/config within 1 s`),
    );
  });

  it("posts a failed boot event when start-up fails after the control plane answered", async () => {
    const cp = await emulator();
    const { code, output } = await runToExit({
      ...saasEnv(cp.url),
      DATABASE_URL: `postgres://molecule:db-password-xyz@127.0.0.1:${await freePort()}/nowhere`,
      LOG_LEVEL: "silent",
    });
    expect(code).not.toBe(0);
    expect(output).toMatch(/start-up failed/);
    expect(cp.bootEvents.map((e) => e.stage)).toEqual(["failed"]);
    expect(cp.bootEvents[0]?.detail).toMatch(/^start-up failed: /);
    expect(cp.bootEvents[0]?.detail).not.toContain("db-password-xyz");
  });

  it("refuses to serve another org than the one its credential is for", async () => {
    const cp = await emulator();
    const { code, output } = await runToExit({
      ...saasEnv(cp.url),
      MOLECULE_ORG_ID: "org_01jsomeoneelse00000000000000",
      LOG_LEVEL: "silent",
    });
    expect(code).not.toBe(0);
    expect(output.trim()).toBe(
      `molecule: MOLECULE_ORG_ID is org_01jsomeoneelse00000000000000 but the control plane's credential (CP_TENANT_TOKEN) is for ${cp.orgId}`,
    );
    expect(cp.bootEvents.map((e) => e.stage)).toEqual(["failed"]);
  });

  it("starts against the control plane, reports its boot, and runs workspaces through it", async () => {
    const cp = await emulator();
    const env = saasEnv(cp.url);
    delete (env as Partial<typeof env>).PORT;
    const platform = await startPlatformProcess({ env: { ...env, LOG_LEVEL: "debug" } });
    await waitFor("boot events", async () => (cp.bootEvents.length >= 3 ? true : undefined), 30_000);
    expect(cp.bootEvents.map((e) => e.stage)).toEqual(["migrated", "listening", "ready"]);
    expect(platform.output()).toContain("backend: controlplane");

    const created = await platform.call("POST", "/workspaces", { name: "saas", runtime: "echo" });
    expect(created.status).toBe(202);
    const id: string = created.body.workspace.id;
    const view = await waitFor(
      `workspace ${id} provisioned through the control plane`,
      async () => {
        const { body } = await platform.call("GET", `/workspaces/${id}`);
        return body.status === "awaiting_agent" ? body : undefined;
      },
      30_000,
    );
    expect(view.backend).toBe("controlplane");
    expect(cp.workspace(id)?.state).toBe("running");
    const provisionCall = cp.requests.find(
      (r) => r.method === "POST" && r.path === "/cp/workspaces/provision",
    );
    expect(provisionCall?.idempotencyKey).toMatch(/^op_[0-9a-z]+:1:provision$/);
    expect(cp.requests.every((r) => r.authorized)).toBe(true);

    const output = platform.output();
    expect(output).not.toContain(TEST_TENANT_TOKEN);
    expect(output).not.toContain(TEST_SIGNING_KEY);
    await platform.kill();
  });
});
