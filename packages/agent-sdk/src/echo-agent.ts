/**
 * The reference workspace runtime: an A2A agent that answers `echo: <text>`. Bundled into the workspace image
 * (infra/build-workspace-image.sh). Configuration: see `loadEchoConfig`. Logs one JSON line per event; tokens and
 * secret values are never logged.
 */
import { runAgent } from "./agent.ts";
import { materializeBootConfig } from "./boot-config.ts";
import { ECHO_CARD, echoReply } from "./echo.ts";
import { ConfigError, loadEchoConfig } from "./echo-config.ts";
import { createJsonLogger, errorFields } from "./log.ts";

const SHUTDOWN_DEADLINE_MS = 10_000;

async function main(): Promise<number> {
  const log = createJsonLogger({ base: { service: "workspace-echo" } });
  let config: ReturnType<typeof loadEchoConfig>;
  try {
    config = loadEchoConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`workspace-echo: ${err.message}\n`);
      return 2;
    }
    throw err;
  }

  const configPath = materializeBootConfig(process.env);
  if (configPath) log("info", "config_written", { path: configPath });

  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      log("warn", "shutdown_forced", { signal: name });
      process.exit(1);
    }
    log("info", "shutdown_requested", { signal: name });
    controller.abort();
    setTimeout(() => {
      log("error", "shutdown_deadline_exceeded", { deadlineMs: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  log("info", "starting", {
    workspaceId: config.workspaceId,
    platformUrl: config.platformUrl,
    port: config.port,
    registration: config.bootToken === undefined ? "no boot token given" : "boot token given",
  });
  try {
    const stop = await runAgent({
      platformUrl: config.platformUrl,
      workspaceId: config.workspaceId,
      bootToken: config.bootToken,
      stateDir: config.stateDir,
      port: config.port,
      host: config.host,
      publicUrl: config.publicUrl,
      card: ECHO_CARD,
      onMessage: echoReply,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      signal: controller.signal,
      log,
    });
    log("info", "exit", { reason: stop.reason });
    return 0;
  } catch (err) {
    log("error", "exit", { reason: "failed", ...errorFields(err) });
    return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`workspace-echo: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
