import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { type BootEventBody, createIdGenerator, type TenantRuntimeConfig } from "@molecule/contracts";
import { createDatabase } from "@molecule/db";
import { persistedSecret } from "@molecule/db/data-dir";
import { mintHexKey, mintToken, Sealer } from "@molecule/identity";
import {
  type ControlPlaneClient,
  ControlPlaneUnreachableError,
  fetchTenantConfig,
  postBootEvent,
} from "@molecule/provisioner-core";
import { ChangeFeed } from "@molecule/service-kit/cluster";
import { frontDoorServer } from "@molecule/service-kit/http";
import { listeningUrl, shutdownOnSignals } from "@molecule/service-kit/lifecycle";
import { logSerializers } from "@molecule/service-kit/log";
import { ServiceMetrics, serveMetrics } from "@molecule/service-kit/metrics";
import pino, { type Logger } from "pino";
import { createPlatform } from "./app.ts";
import { buildTenantBackups } from "./backups.ts";
import { loadConfig } from "./config.ts";
import {
  buildAgentHostResolver,
  buildControlPlaneClient,
  buildProvisioner,
  selectedBackend,
} from "./provisioner.ts";
import { ActivityTracker } from "./services/activity.ts";
import { type PlatformDeps, systemClock } from "./services/deps.ts";
import { EventBus, PLATFORM_EVENT_SHARING } from "./services/events.ts";
import { HeartbeatBatcher, heartbeatFlushIntervalMs } from "./services/heartbeats.ts";
import { LivenessSweeper } from "./services/liveness.ts";
import { OperationRunner } from "./services/operations.ts";
import { PoolFiller } from "./services/pool-filler.ts";
import { createTenantReconciler } from "./services/reconcile.ts";
import { createTenantRetention } from "./services/retention.ts";

/** Secrets never reach a log line: the logger drops these paths whatever the call site passes. */
export const REDACTED_PATHS = [
  "req.headers.authorization",
  "headers.authorization",
  "*.token",
  "*.auth_token",
  "*.bootToken",
  "*.value",
  "*.secrets",
  "*.env",
  "Env",
  "*.Env",
  "*.tenantToken",
  "*.signingKey",
  "*.adminToken",
  "*.secretAccessKey",
];

/**
 * Boot events tell the control plane how far start-up got, and which image runs (MOLECULE_IMAGE, when the tenant
 * backend set it: a redeploy waits for `ready` with its image). They are posted in order without holding start-up
 * up, and a failure to post one is logged, never fatal.
 */
class BootReporter {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly client: ControlPlaneClient,
    private readonly logger: Logger,
    private readonly secrets: readonly string[],
    private readonly image: string | null,
  ) {}

  post(stage: BootEventBody["stage"], detail?: string): Promise<unknown> {
    const event: BootEventBody = {
      stage,
      ...(detail === undefined ? {} : { detail: this.scrub(detail) }),
      ...(this.image ? { image: this.image } : {}),
    };
    this.queue = this.queue.then(() => postBootEvent(this.client, event, this.logger));
    return this.queue;
  }

  /** A short reason with every configured secret value taken out. */
  private scrub(text: string): string {
    let out = text.split("\n")[0] ?? "";
    for (const secret of this.secrets) if (secret) out = out.split(secret).join("[redacted]");
    return out.slice(0, 500);
  }
}

function databasePassword(url: string | undefined): string {
  try {
    return url ? decodeURIComponent(new URL(url).password) : "";
  } catch {
    return "";
  }
}

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    console.error(`molecule: ${(error as Error).message}`);
    process.exit(1);
  }
  const logger = pino({
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    serializers: logSerializers,
  });

  const selection = selectedBackend(config);

  // controlplane mode: nothing starts until the control plane has said who this tenant is and what it may do
  let runtime: TenantRuntimeConfig | undefined;
  let boot: BootReporter | undefined;
  if (selection.backend === "controlplane") {
    const client = buildControlPlaneClient(config, logger);
    const reporter = new BootReporter(
      client,
      logger,
      [
        config.controlPlane.tenantToken ?? "",
        config.controlPlane.signingKey ?? "",
        config.auth.adminToken ?? "",
        config.secrets.key ?? "",
        config.data.databaseUrl ?? "",
        databasePassword(config.data.databaseUrl),
      ],
      config.controlPlane.image,
    );
    try {
      runtime = await fetchTenantConfig(client, { waitMs: config.controlPlane.startupWaitMs, logger });
    } catch (error) {
      const message = (error as Error).message;
      if (error instanceof ControlPlaneUnreachableError && error.reachable)
        await reporter.post("failed", message);
      console.error(`molecule: ${message}`);
      process.exit(1);
    }
    boot = reporter;
    if (config.org.saas && runtime.org_id !== config.org.id) {
      const message = `MOLECULE_ORG_ID is ${config.org.id} but the control plane's credential (CP_TENANT_TOKEN) is for ${runtime.org_id}`;
      await boot.post("failed", message);
      console.error(`molecule: ${message}`);
      process.exit(1);
    }
    logger.info(
      {
        controlPlane: config.controlPlane.url,
        orgId: runtime.org_id,
        workspaceBackend: runtime.workspace_backend,
      },
      "control plane configuration received",
    );
  }

  try {
    await run(config, logger, runtime, boot);
  } catch (error) {
    await boot?.post("failed", `start-up failed: ${(error as Error).message}`);
    throw error;
  }
}

async function run(
  config: ReturnType<typeof loadConfig>,
  logger: Logger,
  runtime: TenantRuntimeConfig | undefined,
  boot: BootReporter | undefined,
): Promise<void> {
  let provisioner: PlatformDeps["provisioner"];
  try {
    provisioner = buildProvisioner(config, logger, runtime);
  } catch (error) {
    await boot?.post("failed", (error as Error).message);
    console.error(`molecule: ${(error as Error).message}`);
    process.exit(1);
  }

  const admin = config.auth.adminToken
    ? { value: config.auth.adminToken, created: false }
    : persistedSecret(config.data.dir, "admin-token", () => mintToken("mat"));
  const secretsKey = config.secrets.key
    ? { value: config.secrets.key, created: false }
    : persistedSecret(config.data.dir, "secrets-key", mintHexKey);
  const sealer = Sealer.fromConfig(secretsKey.value, config.secrets.keyVersion, config.secrets.oldKeys);

  const database = await createDatabase(
    config.data.databaseUrl ? { url: config.data.databaseUrl } : { dataDir: `${config.data.dir}/pglite` },
  );
  await database.migrate();
  void boot?.post("migrated");
  // Replicas on one database: row changes (what memory kept between requests must forget) and events reach every one
  // of them, this one included (docs/operations.md). The embedded database has one process by construction, so its
  // events stay in process: sharing them would run a statement in this process's own PGlite for every A2A delivery.
  const changes = await ChangeFeed.start(database);
  const events = new EventBus();
  if (database.driver === "postgres") {
    await events.share({ db: database.db, listen: database.listen, logger, ...PLATFORM_EVENT_SHARING });
  }
  events.followChanges(changes);

  const deps: PlatformDeps = {
    db: database.db,
    advisoryLock: database.withAdvisoryLock,
    provisioner,
    sealer,
    clock: systemClock,
    ids: createIdGenerator(),
    logger,
    events,
    metrics: new ServiceMetrics({ processMetrics: true }),
    resolveAgentHost: buildAgentHostResolver(config),
    settings: {
      // in controlplane mode the control plane's word on the org is the one that counts
      orgId: runtime?.org_id ?? config.org.id,
      deployment: config.deployment,
      adminToken: admin.value,
      publicUrl: config.http.publicUrl,
      allowedRuntimes: config.workspaces.allowedRuntimes,
      maxBodyBytes: config.http.maxBodyBytes,
      a2aTimeoutMs: config.a2a.timeoutMs,
      a2aMaxRequestBytes: config.a2a.maxRequestBytes,
      a2aMaxResponseBytes: config.a2a.maxResponseBytes,
      a2aWakeTimeoutMs: config.a2a.wakeTimeoutMs,
      idleSuspendAfterMs: config.idle.suspendAfterMs,
      allowInsecureAgentUrls: config.agentUrls.allowInsecure,
      allowPrivateAgentUrls: config.agentUrls.allowPrivate,
      staleAfterMs: config.liveness.staleAfterMs,
      redeployOnlineTimeoutMs: config.liveness.redeployOnlineTimeoutMs,
      operationLeaseMs: config.operations.leaseMs,
      operationMaxAttempts: config.operations.maxAttempts,
      operationDeadlinesMs: config.operations.deadlinesMs,
      workspaceEnv: config.workspaces.env,
      // The control plane picks its workspaces' image: this tenant's WORKSPACE_IMAGE_* would name one it never runs.
      workspaceImage:
        provisioner.name === "controlplane"
          ? undefined
          : { prefix: config.workspaces.imagePrefix, tag: config.workspaces.imageTag },
      // Through the control plane, members always wait suspended: a claim's start is how the control plane hears of it.
      suspendPoolMembers:
        config.backend.selection.backend === "flyio" ||
        (provisioner.name === "controlplane" && provisioner.capabilities().suspend),
      reconcile: config.reconcile,
      rateLimits: config.rateLimits,
    },
  };
  const instanceId = `${process.pid}-${deps.ids.next("req")}`;
  const runner = new OperationRunner(deps, instanceId, undefined, changes);
  const heartbeats = new HeartbeatBatcher(
    deps,
    heartbeatFlushIntervalMs(config.liveness.staleAfterMs),
    changes,
  );
  const sweeper = new LivenessSweeper(deps, config.liveness.sweepIntervalMs, heartbeats);
  const activity = new ActivityTracker(deps, heartbeatFlushIntervalMs(config.liveness.staleAfterMs));
  const reconciler = createTenantReconciler(deps, instanceId);
  const retention = createTenantRetention(deps, config.retention);
  const poolFiller = new PoolFiller(deps);
  // The org's slug names the tenant's folder under TENANT_BACKUP_S3_PREFIX; a standalone platform uses its deployment.
  const backups = buildTenantBackups(config, deps, database, runtime?.slug ?? config.deployment);
  const { app, rawRoutes, idle } = createPlatform(deps, {
    changes,
    activity,
    onOperationQueued: (operationId) => void runner.runQueued(operationId),
    onPoolChanged: () => poolFiller.wake(),
    reconciler,
    heartbeats,
    ...(backups ? { backups } : {}),
  });

  let onListening: () => void = () => {};
  let onServerError: (error: Error) => void = () => {};
  const listening = new Promise<void>((resolve, reject) => {
    onListening = resolve;
    onServerError = reject;
  });
  const server = serve(
    {
      fetch: app.fetch,
      port: config.http.port,
      hostname: config.http.host,
      createServer: frontDoorServer(rawRoutes, logger, deps.metrics),
    },
    (info) => {
      onListening();
      const where = listeningUrl(info);
      logger.info(
        { url: where, backend: provisioner.name, database: database.driver, dataDir: config.data.dir },
        "tenant platform listening",
      );
      console.log(
        `\nMolecule tenant platform listening on ${where} (backend: ${provisioner.name}, database: ${database.driver})`,
      );
      if (admin.created || !config.auth.adminToken) {
        console.log(
          `Admin token${admin.created ? " (generated now)" : ""}: ${admin.value}\n  (kept in ${config.data.dir}/admin-token; set ADMIN_TOKEN to choose your own)\n`,
        );
      }
    },
  );
  server.once("error", (error) => onServerError(error));
  await listening;
  const metricsServer =
    config.metrics.port === null
      ? null
      : await serveMetrics(deps.metrics, config.metrics.port, logger, config.metrics.host);
  if (metricsServer) {
    logger.info({ url: listeningUrl(metricsServer.address() as AddressInfo) }, "metrics listening");
  }
  void boot?.post("listening");
  heartbeats.start();
  runner.start();
  sweeper.start();
  activity.start();
  idle.start(config.liveness.sweepIntervalMs);
  reconciler.start();
  retention.start();
  poolFiller.start();
  backups?.start();
  void boot?.post("ready");

  shutdownOnSignals({
    logger,
    server,
    beforeClose: () => {
      deps.events.close(); // ends open event streams, which would otherwise hold the server open
      metricsServer?.close();
    },
    // The heartbeat batcher's stop writes what it still holds, before the database closes.
    loops: [
      heartbeats,
      { stop: () => changes.close() },
      runner,
      sweeper,
      idle,
      activity, // after the idle sweep: what it still holds is written before the database closes
      reconciler,
      retention,
      poolFiller,
      ...(backups ? [backups] : []),
      { stop: () => events.drain() }, // events published until now are sent before the database closes
    ],
    database,
  });
}

void main().catch((error: unknown) => {
  console.error(`molecule: start-up failed: ${(error as Error).message}`);
  process.exit(1);
});
