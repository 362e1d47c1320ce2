/**
 * The echo agent as this process's whole job, for the workspace image's entry (`echo-agent.ts`) and the
 * `molecule-agent` CLI: runs it until SIGTERM or SIGINT or the workspace's deletion. A second signal, or a stop that
 * overruns the deadline, exits the process with status 1.
 */
import { type AgentStop, runAgent } from "./agent.ts";
import type { AgentCard } from "./client.ts";
import { echoTask } from "./echo.ts";
import type { EchoConfig } from "./echo-config.ts";
import type { LogFields, Logger } from "./log.ts";

export const SHUTDOWN_DEADLINE_MS = 10_000;

export interface EchoProcessOptions extends EchoConfig {
  card: AgentCard;
  log: Logger;
  /** What the `starting` line says about this run (never a token). */
  starting: LogFields;
}

/** Resolves how the agent stopped; rejects as `runAgent` does. The signal handlers are removed either way. */
export async function runEchoProcess(options: EchoProcessOptions): Promise<AgentStop> {
  const { log } = options;
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

  log("info", "starting", options.starting);
  try {
    return await runAgent({
      platformUrl: options.platformUrl,
      workspaceId: options.workspaceId,
      bootToken: options.bootToken,
      poolToken: options.poolToken,
      stateDir: options.stateDir,
      port: options.port,
      host: options.host,
      publicUrl: options.publicUrl,
      card: options.card,
      onMessage: echoTask,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      signal: controller.signal,
      log,
    });
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}
