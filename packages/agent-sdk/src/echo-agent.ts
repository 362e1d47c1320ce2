/**
 * The reference workspace runtime: an A2A agent that answers `echo: <text>`. Bundled into the workspace image
 * (infra/build-workspace-image.sh). Configuration: see `loadEchoConfig`. Logs one JSON line per event; tokens and
 * secret values are never logged.
 */
import { materializeBootConfig } from "./boot-config.ts";
import { ECHO_CARD } from "./echo.ts";
import { ConfigError, loadEchoConfig } from "./echo-config.ts";
import { runEchoProcess } from "./echo-process.ts";
import { createJsonLogger, errorFields } from "./log.ts";

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

  try {
    const stop = await runEchoProcess({
      ...config,
      card: ECHO_CARD,
      log,
      starting: {
        workspaceId: config.workspaceId,
        platformUrl: config.platformUrl,
        port: config.port,
        registration:
          config.bootToken !== undefined
            ? "boot token given"
            : config.poolToken !== undefined
              ? "warm pool member: waits for its claim"
              : "no boot token given",
      },
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
