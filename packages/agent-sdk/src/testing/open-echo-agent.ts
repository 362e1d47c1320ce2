/**
 * The echo agent's A2A server alone, open to any caller (no platform, no inbound token), for conformance kits such as
 * the protocol's a2a-tck: `npx tsx packages/agent-sdk/src/testing/open-echo-agent.ts [port]` (default 8000, on
 * 127.0.0.1). Stops on SIGINT or SIGTERM.
 */
import { startA2AServer } from "../a2a-server.ts";
import { ECHO_CARD, echoTask } from "../echo.ts";
import { createJsonLogger } from "../log.ts";

const port = Number(process.argv[2] ?? 8000);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  process.stderr.write(`open-echo-agent: not a port: ${process.argv[2]}\n`);
  process.exit(2);
}
const url = `http://127.0.0.1:${port}/`;
const log = createJsonLogger({ base: { service: "open-echo-agent" } });
const server = await startA2AServer({
  host: "127.0.0.1",
  port,
  card: { ...ECHO_CARD, url },
  onMessage: echoTask,
  inbound: "open",
  log,
});
log("info", "listening", { url: `http://127.0.0.1:${server.port}/` });
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void server.close());
