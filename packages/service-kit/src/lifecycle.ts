import type { AddressInfo } from "node:net";
import type { Logger } from "pino";

const SHUTDOWN_DEADLINE_MS = 20_000;

export interface ShutdownPlan {
  logger: Logger;
  server: { close(callback: () => void): unknown };
  /** Runs first: ends long-lived responses (event streams) that would otherwise hold the server open. */
  beforeClose?: () => void;
  /** Background loops, stopped together once HTTP has drained. */
  loops: ReadonlyArray<{ stop(): Promise<void> }>;
  /** Closed last. */
  database: { close(): Promise<void> };
  deadlineMs?: number;
}

/**
 * On the first SIGTERM or SIGINT: stops accepting requests and drains HTTP, stops the background loops, closes the
 * database, exits 0. Past the deadline it exits 1 whatever is still running.
 */
export function shutdownOnSignals(plan: ShutdownPlan): void {
  const { logger } = plan;
  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, "shutting down");
    const deadline = setTimeout(() => {
      logger.error("shutdown deadline passed; exiting");
      process.exit(1);
    }, plan.deadlineMs ?? SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    plan.beforeClose?.();
    await new Promise<void>((resolve) => plan.server.close(() => resolve()));
    await Promise.all(plan.loops.map((loop) => loop.stop()));
    await plan.database.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

/** The URL to print for a server listening on `info`; a wildcard address is shown as loopback. */
export function listeningUrl(info: AddressInfo): string {
  return `http://${info.address === "0.0.0.0" ? "127.0.0.1" : info.address}:${info.port}`;
}
