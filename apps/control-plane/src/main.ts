import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createIdGenerator } from "@molecule/contracts";
import { createDatabase } from "@molecule/db";
import { CP_SECRETS_KEY_NAMES, Sealer } from "@molecule/identity";
import { EventBus } from "@molecule/service-kit/events";
import { listeningUrl, shutdownOnSignals } from "@molecule/service-kit/lifecycle";
import { logSerializers } from "@molecule/service-kit/log";
import { serveMetrics } from "@molecule/service-kit/metrics";
import pino from "pino";
import { createApp, createOperationRunner, createRolloutRunner } from "./app.ts";
import { buildAwsAccess, buildTenantBackend, buildWorkspaceProvisioner } from "./backends.ts";
import { resolveSecrets, SECRET_FILES } from "./bootstrap.ts";
import { loadConfig } from "./config.ts";
import { CP_EVENT_SHARING, CP_MIGRATIONS } from "./db/migrations.ts";
import { type ControlPlaneDeps, systemClock } from "./services/deps.ts";
import { controlPlaneMetrics } from "./services/metrics.ts";
import { createControlPlaneReconciler } from "./services/reconcile.ts";
import { createCpRetention } from "./services/retention.ts";
import type { RolloutEventType } from "./services/rollout-events.ts";

/** Secrets never reach a log line: the logger drops these paths whatever the call site passes. */
export const REDACTED_PATHS = [
  "req.headers.authorization",
  "headers.authorization",
  "*.token",
  "*.credential",
  "*.tenant_credential",
  "*.tenant_admin_token",
  "*.env",
  "*.Env",
  "Env",
  "*.secrets",
  "*.value",
];

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    console.error(`molecule control plane: ${(error as Error).message}`);
    process.exit(1);
  }
  const logger = pino({
    level: config.logLevel,
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    serializers: logSerializers,
  });

  let sealer: Sealer;
  let secrets: ReturnType<typeof resolveSecrets>;
  try {
    secrets = resolveSecrets(config);
    sealer = Sealer.fromConfig(
      secrets.secretsKey.value,
      config.secrets.keyVersion,
      config.secrets.oldKeys,
      CP_SECRETS_KEY_NAMES,
    );
  } catch (error) {
    console.error(`molecule control plane: ${(error as Error).message}`);
    process.exit(1);
  }

  const database = await createDatabase(
    config.data.databaseUrl ? { url: config.data.databaseUrl } : { dataDir: `${config.data.dir}/pglite` },
    CP_MIGRATIONS,
  );
  let provisioner: ControlPlaneDeps["provisioner"];
  let tenants: ControlPlaneDeps["tenants"];
  try {
    const onAws = config.tenantBackend.name === "ec2" || config.workspaceBackend.name === "ec2";
    const backendDeps = {
      logger,
      db: database.db,
      aws: onAws ? buildAwsAccess(config, logger) : undefined,
      tenantDatabaseSecret: secrets.provisionSharedSecret.value,
    };
    provisioner = buildWorkspaceProvisioner(config, backendDeps);
    tenants = buildTenantBackend(config, backendDeps);
  } catch (error) {
    console.error(`molecule control plane: ${(error as Error).message}`);
    process.exit(1);
  }
  await database.migrate();
  // Replicas on one database: every one of them sees every event (docs/operations.md).
  const events = new EventBus<RolloutEventType>();
  await events.share({ db: database.db, listen: database.listen, logger, ...CP_EVENT_SHARING });

  const deps: ControlPlaneDeps = {
    db: database.db,
    advisoryLock: database.withAdvisoryLock,
    provisioner,
    tenants,
    sealer,
    events,
    metrics: controlPlaneMetrics(database.db, { processMetrics: true }),
    clock: systemClock,
    ids: createIdGenerator(),
    logger,
    settings: {
      adminToken: secrets.adminToken.value,
      provisionSharedSecret: secrets.provisionSharedSecret.value,
      publicUrl: config.http.publicUrl,
      deployment: config.deployment,
      maxBodyBytes: config.http.maxBodyBytes,
      operationLeaseMs: config.operations.leaseMs,
      operationMaxAttempts: config.operations.maxAttempts,
      operationDeadlinesMs: config.operations.deadlinesMs,
      tenantReadyDeadlineMs: config.tenantBackend.readyDeadlineMs,
      reconcile: config.reconcile,
      backups: config.backups,
      rateLimits: config.rateLimits,
    },
  };
  const instanceId = `${process.pid}-${deps.ids.next("req")}`;
  const runner = createOperationRunner(deps, instanceId);
  const reconciler = createControlPlaneReconciler(deps, instanceId);
  const rollouts = createRolloutRunner(deps, instanceId);
  const app = createApp(deps, {
    onOperationQueued: () => runner.wake(),
    onRolloutQueued: () => rollouts.wake(),
    reconciler,
  });

  const server = serve({ fetch: app.fetch, port: config.http.port, hostname: config.http.host }, (info) => {
    const where = listeningUrl(info);
    logger.info(
      {
        url: where,
        workspaceBackend: provisioner.name,
        tenantBackend: tenants.name,
        database: database.driver,
      },
      "control plane listening",
    );
    console.log(
      `\nMolecule control plane listening on ${where} (workspaces: ${provisioner.name}, tenants: ${tenants.name}, database: ${database.driver})`,
    );
    const generated = Object.entries(secrets)
      .filter(([, secret]) => secret.created)
      .map(([name]) => `${config.data.dir}/${SECRET_FILES[name as keyof typeof SECRET_FILES]}`);
    if (generated.length > 0) console.log(`Generated for development: ${generated.join(", ")}`);
    if (secrets.adminToken.persisted) {
      console.log(
        `Admin token${secrets.adminToken.created ? " (generated now)" : ""}: ${secrets.adminToken.value}\n  (kept in ${config.data.dir}/${SECRET_FILES.adminToken}; set CP_ADMIN_API_TOKEN to choose your own)\n`,
      );
    }
  });
  const metricsServer =
    config.metrics.port === null
      ? null
      : await serveMetrics(deps.metrics, config.metrics.port, logger, config.metrics.host);
  if (metricsServer) {
    logger.info({ url: listeningUrl(metricsServer.address() as AddressInfo) }, "metrics listening");
  }
  runner.start();
  rollouts.start();
  reconciler.start();
  const retention = createCpRetention(deps, config.retention);
  retention.start();

  shutdownOnSignals({
    logger,
    server,
    // events published until now are sent before the database closes
    loops: [runner, rollouts, reconciler, retention, { stop: () => events.drain() }],
    database,
    beforeClose: () => {
      deps.events.close(); // ends open event streams, which would otherwise hold the server open
      metricsServer?.close();
    },
  });
}

void main().catch((error: unknown) => {
  console.error(`molecule control plane: start-up failed: ${(error as Error).message}`);
  process.exit(1);
});
