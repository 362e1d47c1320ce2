/**
 * The baseline for bench/heartbeats.ts: a bare `node:http` server that does what a heartbeat needs of HTTP and no
 * more — requires a bearer token, reads the body, parses it as JSON, checks `workspace_id` is a string, answers the
 * platform's answer as JSON. No database, no framework, no log line, no token check. Run as its own process, as the
 * platform is, so both pay the same hops.
 *
 * Prints `listening <port>` on stdout once it listens on 127.0.0.1.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

const ANSWER = JSON.stringify({ ok: true, status: "online", heartbeat_interval_seconds: 30 });

const server = createServer((req, res) => {
  if (
    req.method !== "POST" ||
    req.url !== "/registry/heartbeat" ||
    !req.headers.authorization?.startsWith("Bearer ")
  ) {
    req.resume();
    res.writeHead(401).end();
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    let body: { workspace_id?: unknown };
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (typeof body.workspace_id !== "string") {
      res.writeHead(400).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(ANSWER);
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${(server.address() as AddressInfo).port}`);
});
process.once("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
