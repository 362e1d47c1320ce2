import { serve } from "@hono/node-server";
import { createIdGenerator } from "@molecule/contracts";
import { createDatabase } from "@molecule/db";
import pino from "pino";
import { createApp } from "./app.ts";
import { makeAdminToken, makeSecretsKey, persistedSecret } from "./bootstrap.ts";
import { loadConfig } from "./config.ts";
import { buildProvisioner } from "./provisioner.ts";
import { Sealer } from "./services/crypto.ts";
import { type PlatformDeps, systemClock } from "./services/deps.ts";
import { EventBus } from "./services/events.ts";
import { LivenessSweeper } from "./services/liveness.ts";
import { OperationRunner } from "./services/operations.ts";

const SHUTDOWN_DEADLINE_MS = 20_000;

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
];

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    console.error(`molecule: ${(error as Error).message}`);
    process.exit(1);
  }
  const logger = pino({ level: config.logLevel, redact: { paths: REDACTED_PATHS, censor: "[redacted]" } });

  let provisioner: PlatformDeps["provisioner"];
  try {
    provisioner = buildProvisioner(config, logger);
  } catch (error) {
    console.error(`molecule: ${(error as Error).message}`);
    process.exit(1);
  }

  const admin = config.auth.adminToken
    ? { value: config.auth.adminToken, created: false }
    : persistedSecret(config.data.dir, "admin-token", makeAdminToken);
  const secretsKey = config.secrets.key
    ? { value: config.secrets.key, created: false }
    : persistedSecret(config.data.dir, "secrets-key", makeSecretsKey);
  const sealer = Sealer.fromConfig(secretsKey.value, config.secrets.keyVersion, config.secrets.oldKeys);

  const database = await createDatabase(
    config.data.databaseUrl ? { url: config.data.databaseUrl } : { dataDir: `${config.data.dir}/pglite` },
  );
  await database.migrate();

  const deps: PlatformDeps = {
    db: database.db,
    provisioner,
    sealer,
    clock: systemClock,
    ids: createIdGenerator(),
    logger,
    events: new EventBus(),
    settings: {
      orgId: config.org.id,
      deployment: config.deployment,
      adminToken: admin.value,
      publicUrl: config.http.publicUrl,
      allowedRuntimes: config.workspaces.allowedRuntimes,
      maxBodyBytes: config.http.maxBodyBytes,
      a2aTimeoutMs: config.a2a.timeoutMs,
      a2aMaxRequestBytes: config.a2a.maxRequestBytes,
      a2aMaxResponseBytes: config.a2a.maxResponseBytes,
      allowInsecureAgentUrls: config.agentUrls.allowInsecure,
      allowPrivateAgentUrls: config.agentUrls.allowPrivate,
      staleAfterMs: config.liveness.staleAfterMs,
      operationLeaseMs: config.operations.leaseMs,
      operationMaxAttempts: config.operations.maxAttempts,
      workspaceEnv: config.workspaces.env,
    },
  };
  const runner = new OperationRunner(deps, `${process.pid}-${deps.ids.next("req")}`);
  const sweeper = new LivenessSweeper(deps, config.liveness.sweepIntervalMs);
  const app = createApp(deps, { onOperationQueued: () => runner.wake() });

  const server = serve({ fetch: app.fetch, port: config.http.port, hostname: config.http.host }, (info) => {
    const where = `http://${info.address === "0.0.0.0" ? "127.0.0.1" : info.address}:${info.port}`;
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
  });
  runner.start();
  sweeper.start();

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, "shutting down");
    const deadline = setTimeout(() => {
      logger.error("shutdown deadline passed; exiting");
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    deps.events.close(); // ends open event streams, which would otherwise hold the server open
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await Promise.all([runner.stop(), sweeper.stop()]);
    await database.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

void main().catch((error: unknown) => {
  console.error(`molecule: start-up failed: ${(error as Error).message}`);
  process.exit(1);
});
