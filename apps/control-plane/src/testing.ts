/**
 * Test wiring for the control plane: a fresh PostgreSQL database with the CP's migrations, the app with a fake
 * workspace backend (or any Provisioner) and a fake tenant backend, a clock tests move by hand, and callers for
 * the admin API and for signed tenant requests. Kept out of the package's exports; tests import it by path.
 */
import { randomBytes } from "node:crypto";
import { CP_HEADERS, createIdGenerator } from "@molecule/contracts";
import { deriveTenantSigningKey, mintHexKey, mintNonce, Sealer, signRequest } from "@molecule/identity";
import type { Provisioner } from "@molecule/provisioner-core";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { EventBus } from "@molecule/service-kit/events";
import { getTableName } from "drizzle-orm";
import pino from "pino";
import type { AwsNetwork } from "../../../packages/provisioner-core/src/ec2/testkit.ts";
import { AnswerChecker } from "../../../test-support/openapi.ts";
import { createTestDatabase, type TestDatabase } from "../../../test-support/pg.ts";
import { controlPlaneOpenApi, createApp, createOperationRunner, createRolloutRunner } from "./app.ts";
import { CP_MIGRATIONS } from "./db/migrations.ts";
import { CP_TABLES, cpRequestNonces } from "./db/schema.ts";
import type { ControlPlaneDeps, ControlPlaneSettings } from "./services/deps.ts";
import { controlPlaneMetrics } from "./services/metrics.ts";
import type { OperationRunner } from "./services/runner.ts";
import type { TenantBackend } from "./tenants/backend.ts";
import { createFakeTenantBackend, type FakeTenantBackend } from "./tenants/fake.ts";

export const ADMIN_TOKEN = "cp-admin-token-for-tests-0123456789";
export const SHARED_SECRET = "provision-shared-secret-for-tests-0123456789abcdef";

/** A minimal valid workspace spec a tenant sends to provision or start `workspaceId`. */
export const workspaceSpec = (workspaceId: string) => ({
  workspace_id: workspaceId,
  runtime: "echo",
  tier: 2,
  env: { WORKSPACE_ID: workspaceId },
  secret_keys: [],
  metadata: {},
});

/**
 * The environment of a control plane whose tenants are EC2 instances in `net` (from the EC2 testkit's
 * `createNetwork`) on the AWS emulator at `endpoint`, in MOLECULE_ENV prod; `extra` adds settings or overrides these.
 */
export function ec2ControlPlaneEnv(
  endpoint: string,
  net: AwsNetwork,
  extra: Record<string, string>,
): Record<string, string> {
  return {
    MOLECULE_ENV: "prod",
    CP_ADMIN_API_TOKEN: "a".repeat(32),
    PROVISION_SHARED_SECRET: "s".repeat(32),
    CP_SECRETS_ENCRYPTION_KEY: "a".repeat(64),
    CP_TENANT_BACKEND: "ec2",
    CP_PUBLIC_URL: "http://cp.internal:8090",
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL: endpoint,
    EC2_VPC_ID: net.vpcId,
    EC2_SUBNET_ID: net.subnetId,
    EIC_ENDPOINT_SG_ID: net.eicGroupId,
    EC2_TENANT_IAM_PROFILE: net.instanceProfile,
    EC2_AMI: net.imageId,
    ...extra,
  };
}

export interface ManualClock {
  now(): Date;
  advance(ms: number): void;
}

/** The real time; `advance` is refused (for tests where the service runs on its own, e.g. over real HTTP). */
export const realClock: ManualClock = {
  now: () => new Date(),
  advance() {
    throw new Error("the real clock cannot be moved");
  },
};

export function manualClock(start = Date.now()): ManualClock {
  let current = start;
  return {
    now: () => new Date(current),
    advance(ms) {
      current += ms;
    },
  };
}

export interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: test replies are read field by field
  body: any;
  text: string;
  headers: Headers;
}

export interface SignedCall {
  /** Defaults: a fresh nonce, the clock's time, the org's key, JSON of `body`, a fresh Idempotency-Key on POST/DELETE. */
  body?: unknown;
  rawBody?: string;
  credential?: string | null;
  orgId?: string;
  nonce?: string;
  timestamp?: number;
  signingKey?: string;
  idempotencyKey?: string | null;
  /** Sent instead of the body that was signed. */
  sendBody?: string;
  signature?: string;
  /** Signature headers left out of the request. */
  omitHeaders?: readonly (keyof typeof CP_HEADERS)[];
}

export interface TenantIdentity {
  orgId: string;
  slug: string;
  credential: string;
}

export interface TestControlPlane {
  db: TestDatabase;
  deps: ControlPlaneDeps;
  app: ReturnType<typeof createApp>;
  runner: OperationRunner;
  /** The rollout runner (not started: tests start it when they want rollouts to run). */
  rollouts: ReturnType<typeof createRolloutRunner>;
  /** The fake tenant backend; the app uses it unless `options.tenants` was given. */
  tenants: FakeTenantBackend;
  clock: ManualClock;
  admin(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
  tenant(identity: TenantIdentity, method: string, path: string, call?: SignedCall): Promise<Reply>;
  /** Creates an org through the admin API and returns its tenant identity. */
  createOrg(slug: string): Promise<TenantIdentity>;
  /**
   * Every row of every control-plane table, for "nothing changed" assertions. `exceptNonces` leaves out the nonce
   * table: an authentic request is recorded there even when the route then refuses it.
   */
  snapshot(options?: { exceptNonces?: boolean }): Promise<string>;
  rowCounts(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

let answers: AnswerChecker | undefined;

/**
 * A response as tests read it. Its JSON must match the schema the control plane's OpenAPI document gives for its route
 * and status, or this throws.
 */
async function reply(method: string, path: string, response: Response): Promise<Reply> {
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  answers ??= new AnswerChecker(controlPlaneOpenApi());
  answers.check(method, path, response.status, response.headers.get("content-type"), body);
  return { status: response.status, body, text, headers: response.headers };
}

export async function createTestControlPlane(
  options: {
    provisioner?: Provisioner;
    tenants?: TenantBackend;
    settings?: Partial<ControlPlaneSettings>;
    clock?: ManualClock;
    /** The key ring (default: a random key as version 1). */
    sealer?: Sealer;
    logger?: ControlPlaneDeps["logger"];
    /**
     * Another control plane's database, to start a second process on the same data (a restart). It stays open when
     * this one closes: its owner drops it.
     */
    database?: TestDatabase;
  } = {},
): Promise<TestControlPlane> {
  const db = options.database ?? (await createTestDatabase({ migrations: CP_MIGRATIONS }));
  const clock = options.clock ?? manualClock();
  const tenants = createFakeTenantBackend();
  const deps: ControlPlaneDeps = {
    db: db.db,
    advisoryLock: db.withAdvisoryLock,
    provisioner: options.provisioner ?? createFakeProvisioner(),
    tenants: options.tenants ?? tenants,
    sealer: options.sealer ?? Sealer.fromConfig(mintHexKey(), 1, ""),
    events: new EventBus(),
    metrics: controlPlaneMetrics(db.db),
    clock,
    ids: createIdGenerator(),
    logger: options.logger ?? pino({ level: "silent" }),
    settings: {
      adminToken: ADMIN_TOKEN,
      provisionSharedSecret: SHARED_SECRET,
      publicUrl: "http://127.0.0.1:8090",
      deployment: "cp-test",
      maxBodyBytes: 256 * 1024,
      operationLeaseMs: 30_000,
      operationMaxAttempts: 3,
      tenantReadyDeadlineMs: 60_000,
      tenantReadyPollMs: 50,
      reconcile: { intervalMs: 30 * 60_000, deleteOrphans: false, orphanGraceMs: 60 * 60_000 },
      backups: { staleAfterMs: 36 * 60 * 60_000, tenantEnv: {} },
      ...options.settings,
    },
  };
  const rollouts = createRolloutRunner(deps, `test-rollouts-${randomBytes(3).toString("hex")}`, 100);
  const app = createApp(deps, { onRolloutQueued: () => rollouts.wake() });
  const runner = createOperationRunner(deps, `test-${randomBytes(3).toString("hex")}`);

  const admin: TestControlPlane["admin"] = async (method, path, body, headers = {}) =>
    reply(
      method,
      path,
      await app.request(path, {
        method,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...headers,
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      }),
    );

  const tenant: TestControlPlane["tenant"] = async (identity, method, path, call = {}) => {
    const raw = call.rawBody ?? (call.body === undefined ? "" : JSON.stringify(call.body));
    const timestamp = String(call.timestamp ?? Math.floor(clock.now().getTime() / 1000));
    const nonce = call.nonce ?? mintNonce();
    const key = call.signingKey ?? deriveTenantSigningKey(SHARED_SECRET, call.orgId ?? identity.orgId);
    const signature = call.signature ?? signRequest(key, { method, path, timestamp, nonce, body: raw });
    const headers: Record<string, string> = {
      [CP_HEADERS.timestamp]: timestamp,
      [CP_HEADERS.nonce]: nonce,
      [CP_HEADERS.signature]: signature,
    };
    for (const omitted of call.omitHeaders ?? []) delete headers[CP_HEADERS[omitted]];
    const credential = call.credential === undefined ? identity.credential : call.credential;
    if (credential) headers.authorization = `Bearer ${credential}`;
    const mutating = method === "POST" || method === "DELETE";
    const idempotency =
      call.idempotencyKey === undefined
        ? mutating
          ? `key-${randomBytes(8).toString("hex")}`
          : null
        : call.idempotencyKey;
    if (idempotency) headers["idempotency-key"] = idempotency;
    const sent = call.sendBody ?? raw;
    if (sent) headers["content-type"] = "application/json";
    return reply(method, path, await app.request(path, { method, headers, ...(sent ? { body: sent } : {}) }));
  };

  return {
    db,
    deps,
    app,
    runner,
    rollouts,
    tenants,
    clock,
    admin,
    tenant,
    async createOrg(slug) {
      const created = await admin("POST", "/cp/orgs", { slug, name: `Org ${slug}` });
      if (created.status !== 201) throw new Error(`create org ${slug}: ${created.status} ${created.text}`);
      return { orgId: created.body.org.id, slug, credential: created.body.tenant_credential };
    },
    async snapshot(options = {}) {
      const parts: unknown[] = [];
      for (const table of CP_TABLES) {
        if (options.exceptNonces && table === cpRequestNonces) continue;
        parts.push(await db.db.select().from(table));
      }
      return JSON.stringify(parts);
    },
    async rowCounts() {
      const counts: Record<string, number> = {};
      for (const table of CP_TABLES) counts[getTableName(table)] = (await db.db.select().from(table)).length;
      return counts;
    },
    async close() {
      await runner.stop();
      await rollouts.stop();
      deps.events.close();
      if (!options.database) await db.drop();
    },
  };
}
