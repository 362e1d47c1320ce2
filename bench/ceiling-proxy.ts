/**
 * The least an A2A proxy can do, as a ceiling for bench/a2a-proxy.ts: a bare `node:http` server that checks one bearer
 * token held in memory, reads the body, and forwards it with an undici `Pool` (keep-alive) to the agent its path names,
 * adding the agent's inbound token; the answer is piped back as it comes (an event stream included). No database, no
 * framework, no log line, no policy. Run as its own process, as the platform is, so both pay the same hops.
 *
 * Env: CEILING_ROUTES (JSON: `{ "/<name>": { "url": "http://…", "inboundToken": "…" } }`), CEILING_TOKEN (the bearer
 * it accepts). Prints `listening <port>` on stdout once it listens on 127.0.0.1.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { pipeline } from "node:stream/promises";
import { Pool } from "undici";

const routes = new Map<string, { pool: Pool; path: string; inboundToken: string }>();
for (const [path, route] of Object.entries(
  JSON.parse(process.env.CEILING_ROUTES ?? "{}") as Record<string, { url: string; inboundToken: string }>,
)) {
  const url = new URL(route.url);
  routes.set(path, { pool: new Pool(url.origin), path: url.pathname, inboundToken: route.inboundToken });
}
const expected = `Bearer ${process.env.CEILING_TOKEN ?? ""}`;

const server = createServer(async (req, res) => {
  const route = routes.get(req.url ?? "");
  if (req.method !== "POST" || !route || req.headers.authorization !== expected) {
    req.resume();
    res.writeHead(route ? 401 : 404).end();
    return;
  }
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const upstream = await route.pool.request({
      method: "POST",
      path: route.path,
      headers: {
        "content-type": "application/json",
        accept: req.headers.accept ?? "application/json",
        "x-molecule-inbound-token": route.inboundToken,
      },
      body: Buffer.concat(chunks),
    });
    res.writeHead(upstream.statusCode, {
      "content-type": String(upstream.headers["content-type"] ?? "application/json"),
    });
    await pipeline(upstream.body, res);
  } catch {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  }
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${(server.address() as AddressInfo).port}`);
});
process.once("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
