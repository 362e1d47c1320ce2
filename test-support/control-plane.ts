/**
 * The control plane as its own process (apps/control-plane/src/main.ts via tsx) on a free loopback port, for e2e
 * tests and benchmarks: callers for its admin API and for signed tenant requests.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deriveTenantSigningKey } from "@molecule/identity";
import { ControlPlaneClient } from "@molecule/provisioner-core";
import { freePort } from "./net.ts";
import {
  CONTROL_PLANE_MAIN,
  callJson,
  type PlatformExit,
  prepareAnswerChecks,
  spawnPlatform,
  waitUntilHealthy,
} from "./process.ts";

export interface ControlPlaneProcess {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  dataDir: string;
  /** The admin bearer: the one given in env, or the one the control plane printed when it generated it. */
  adminToken: string;
  pid: number;
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<PlatformExit>;
  waitForExit(timeoutMs?: number): Promise<PlatformExit>;
  /** Calls the admin API with the admin bearer; the body is parsed JSON when there is one. */
  // biome-ignore lint/suspicious/noExplicitAny: API answers are asserted on field by field
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** A signed client for one org, as its tenant would hold it (no retries: a failure shows at once). */
  tenantClient(orgId: string, credential: string): ControlPlaneClient;
}

export interface StartControlPlaneOptions {
  /** Added over the defaults; a value of `undefined` removes the default. */
  env?: Record<string, string | undefined>;
  dataDir?: string;
  readyTimeoutMs?: number;
  /** Test-only modules loaded before the control plane's main (see spawnPlatform). */
  imports?: readonly string[];
}

/**
 * Starts the control plane and waits until GET /health answers and its admin token is known. Defaults: loopback,
 * a fresh data folder, a generated admin token, shared secret and sealing key (PROVISION_SHARED_SECRET is read
 * back from env for `tenantClient`, so give one when removing the default).
 */
export async function startControlPlaneProcess(
  options: StartControlPlaneOptions = {},
): Promise<ControlPlaneProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "molecule-cp-e2e-"));
  const defaults: Record<string, string> = {
    PORT: String(await freePort()),
    HOST: "127.0.0.1",
    MOLECULE_DATA_DIR: dataDir,
    CP_ADMIN_API_TOKEN: `mca_${randomBytes(16).toString("hex")}`,
    PROVISION_SHARED_SECRET: randomBytes(32).toString("hex"),
    CP_SECRETS_ENCRYPTION_KEY: randomBytes(32).toString("hex"),
    LOG_LEVEL: "info",
  };
  const env: Record<string, string | undefined> = { ...defaults, ...options.env };
  const port = Number(env.PORT);
  const url = `http://127.0.0.1:${port}`;
  const spawned = spawnPlatform(env, CONTROL_PLANE_MAIN, { imports: options.imports ?? [] });
  prepareAnswerChecks("control-plane");
  const token = await waitUntilHealthy(spawned, {
    name: "control plane",
    url,
    adminToken: env.CP_ADMIN_API_TOKEN,
    readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
  });
  const sharedSecret = env.PROVISION_SHARED_SECRET;

  return {
    url,
    port,
    dataDir,
    adminToken: token,
    pid: spawned.child.pid ?? -1,
    output: spawned.output,
    waitForExit: spawned.waitForExit,
    kill: spawned.kill,
    admin: (method, path, body) => callJson(url, token, method, path, body),
    tenantClient(orgId, credential) {
      if (!sharedSecret) throw new Error("tenantClient needs PROVISION_SHARED_SECRET in the start options");
      return signedTenantClient(url, sharedSecret, orgId, credential);
    },
  };
}

/** A signed client for one org of the control plane at `url`, as its tenant would hold it (no retries). */
export function signedTenantClient(
  url: string,
  sharedSecret: string,
  orgId: string,
  credential: string,
): ControlPlaneClient {
  return new ControlPlaneClient({
    baseUrl: url,
    tenantToken: credential,
    signingKey: deriveTenantSigningKey(sharedSecret, orgId),
    maxAttempts: 1,
  });
}
