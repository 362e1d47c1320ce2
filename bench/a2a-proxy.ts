/**
 * An A2A round trip through the tenant platform's proxy (`POST /workspaces/:id/a2a`, workspace → workspace with the
 * caller's own token) against a direct call to the same agent, measured in the same run.
 *
 * The platform runs as its own process (test-support/process.ts) on a fresh PostgreSQL database, allowing plain
 * HTTP agent URLs on loopback. The agent is the SDK's A2A server (`startA2AServer`) answering with the text it got,
 * in this process, on 127.0.0.1. Three workspace rows (caller, target, streamer) are written straight into the
 * database, then registered with the admin token over the API (which checks their URLs) and heartbeated online
 * with their own tokens. Both agents require the inbound token their registration answered, as an agent behind the
 * platform does; the direct path sends it itself, so both paths pay for the check. The client is an undici Pool with keep-alive per origin, the same for both paths; every
 * answer is checked (HTTP 200, the request's id, the echoed text) and a mismatch counts as an error.
 *
 * - `message/send`, one at a time: N direct and N proxied, in interleaved blocks so machine noise hits both.
 * - `message/send`, BENCH_CONCURRENCY in flight: the same, with throughput.
 * - `message/stream`: time to the first event, direct vs proxied, against a small SSE agent in this process that
 *   writes a `working` status update at once and the final message right after (the SDK server has no streaming).
 *
 *   pnpm exec tsx bench/a2a-proxy.ts
 *   BENCH_N=2000 (per path and variant)  BENCH_CONCURRENCY=16  BENCH_STREAM_N=200
 */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  INBOUND_TOKEN_HEADER,
  type InboundAuth,
  messageText,
  type StartedA2AServer,
  startA2AServer,
} from "@molecule/agent-sdk";
import { Pool } from "undici";
import {
  type BenchPlatform,
  combine,
  drive,
  envNumber,
  errorText,
  type LoadResult,
  machine,
  num,
  runBench,
  seedWorkspaces,
  startBenchPlatform,
  summarize,
} from "./lib.ts";

const N = Math.round(envNumber("BENCH_N", 2000));
const CONCURRENCY = Math.round(envNumber("BENCH_CONCURRENCY", 16));
const STREAM_N = Math.round(envNumber("BENCH_STREAM_N", 200));
const BLOCK = 100;
const WARMUP = 200;
const HARD_LIMIT_MS = 180_000;

let platform: BenchPlatform | undefined;
let agent: StartedA2AServer | undefined;
let streamer: Server | undefined;
const pools: Pool[] = [];

function sendBody(i: number, method = "message/send"): { body: string; text: string } {
  const text = `ping ${i}`;
  const body = JSON.stringify({
    jsonrpc: "2.0",
    id: i,
    method,
    params: { message: { role: "user", messageId: `m-${i}`, parts: [{ kind: "text", text }] } },
  });
  return { body, text };
}

/** A sender of `message/send` to `path` on `pool`, checking the answer. */
function sender(pool: Pool, path: string, headers: Record<string, string>) {
  return async (i: number): Promise<string | undefined> => {
    const { body, text } = sendBody(i);
    const response = await pool.request({
      method: "POST",
      path,
      headers: { ...headers, "content-type": "application/json" },
      body,
    });
    const raw = await response.body.text();
    if (response.statusCode !== 200) return `HTTP ${response.statusCode}`;
    const answer = JSON.parse(raw) as { id?: unknown; result?: { parts?: { text?: unknown }[] } };
    return answer.id === i && answer.result?.parts?.[0]?.text === text ? undefined : "wrong answer";
  };
}

/**
 * A sender of `message/stream` that records the time to the first event into `firstEvent` and checks that both
 * events arrive.
 */
function streamSender(pool: Pool, path: string, headers: Record<string, string>, firstEvent: number[]) {
  return async (i: number): Promise<string | undefined> => {
    const started = performance.now();
    const response = await pool.request({
      method: "POST",
      path,
      headers: { ...headers, "content-type": "application/json", accept: "text/event-stream" },
      body: sendBody(i, "message/stream").body,
    });
    let seen = "";
    let first: number | undefined;
    for await (const chunk of response.body) {
      seen += String(chunk);
      if (first === undefined && seen.includes("\n\n")) first = performance.now() - started;
    }
    if (response.statusCode !== 200) return `HTTP ${response.statusCode}`;
    if (first === undefined || seen.split("\n\n").filter(Boolean).length !== 2) return "wrong stream";
    firstEvent.push(first);
    return undefined;
  };
}

/**
 * Writes a `working` status update at once and the final message right after, then ends. Answers 401 to a request
 * without `inbound()`'s token, as the SDK server does.
 */
function startStreamingAgent(inbound: () => InboundAuth): Promise<Server> {
  const server = createServer(async (req, res) => {
    const auth = inbound();
    if (auth === "pending" || (auth !== "open" && req.headers[INBOUND_TOKEN_HEADER] !== auth.token)) {
      req.resume();
      res.writeHead(401, { "content-type": "application/json" }).end("{}");
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const request = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
      id: number;
      params: { message: { parts: { kind: string; text?: string }[] } };
    };
    const event = (result: unknown) =>
      `data: ${JSON.stringify({ jsonrpc: "2.0", id: request.id, result })}\n\n`;
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.write(event({ kind: "status-update", status: { state: "working" }, final: false }));
    setImmediate(() => {
      res.end(
        event({
          kind: "message",
          role: "agent",
          messageId: `r-${request.id}`,
          parts: request.params.message.parts,
        }),
      );
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** N requests of each of two senders at `concurrency`, in blocks alternating which goes first. */
async function interleaved(
  count: number,
  blockSize: number,
  concurrency: number,
  a: (i: number) => Promise<string | undefined>,
  b: (i: number) => Promise<string | undefined>,
): Promise<[LoadResult, LoadResult]> {
  const runsA: LoadResult[] = [];
  const runsB: LoadResult[] = [];
  for (let done = 0, block = 0; done < count; done += blockSize, block++) {
    const size = Math.min(blockSize, count - done);
    const runA = () => drive({ concurrency, count: size, send: (i) => a(done + i) });
    const runB = () => drive({ concurrency, count: size, send: (i) => b(done + i) });
    if (block % 2 === 0) {
      runsA.push(await runA());
      runsB.push(await runB());
    } else {
      runsB.push(await runB());
      runsA.push(await runA());
    }
  }
  return [combine(runsA), combine(runsB)];
}

function report(title: string, direct: LoadResult, proxied: LoadResult, withRps: boolean): void {
  const d = summarize(direct.latencies);
  const p = summarize(proxied.latencies);
  const rps = (r: LoadResult) => r.requests / (r.elapsedMs / 1000);
  console.log(`\n${title} (ms)`);
  console.log(
    `${"".padEnd(22)}${"p50".padStart(8)}${"p99".padStart(8)}${"mean".padStart(8)}${withRps ? "     rps" : ""}  errors`,
  );
  for (const [name, result, s] of [
    ["direct", direct, d],
    ["via platform", proxied, p],
  ] as const) {
    console.log(
      `${name.padEnd(22)}${num(s.p50)}${num(s.p99)}${num(s.mean)}${withRps ? num(rps(result), 8, 0) : ""}  ${errorText(result.errors)}`,
    );
  }
  console.log(
    `${"ratio proxied/direct".padEnd(22)}${num(p.p50 / d.p50)}${num(p.p99 / d.p99)}${num(p.mean / d.mean)}${withRps ? num(rps(proxied) / rps(direct)) : ""}`,
  );
  console.log(`${"added".padEnd(22)}${num(p.p50 - d.p50)}${num(p.p99 - d.p99)}${num(p.mean - d.mean)}`);
}

async function main(): Promise<void> {
  const atStart = machine();
  platform = await startBenchPlatform();
  // Each agent's inbound token, from its registration below.
  const inbound = new Map<"agent" | "streamer", string>();
  const authOf = (which: "agent" | "streamer") => (): InboundAuth => {
    const token = inbound.get(which);
    return token ? { token } : "pending";
  };
  agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name: "bench-echo", description: "answers with the text it got", skills: [] },
    inbound: authOf("agent"),
    onMessage: async (message) => ({ parts: [{ kind: "text", text: messageText(message) }] }),
  });
  streamer = await startStreamingAgent(authOf("streamer"));
  const agentUrl = `http://127.0.0.1:${agent.port}`;
  const streamerUrl = `http://127.0.0.1:${(streamer.address() as AddressInfo).port}`;

  const [caller, target, streaming] = await seedWorkspaces(platform, 3, {
    status: "awaiting_agent",
    withTokens: false,
  });
  if (!caller || !target || !streaming) throw new Error("seeding wrote fewer than 3 workspaces");
  const tokens = new Map<string, string>();
  for (const [ws, url, which] of [
    [caller, null, null],
    [target, `${agentUrl}/`, "agent"],
    [streaming, `${streamerUrl}/`, "streamer"],
  ] as const) {
    const registered = await platform.process.call("POST", "/registry/register", { id: ws.id, url });
    if (registered.status !== 200) throw new Error(`register answered ${registered.status}`);
    const token: string = registered.body.auth_token;
    if (which) inbound.set(which, registered.body.inbound_token);
    tokens.set(ws.id, token);
    const beat = await fetch(`${platform.process.url}/registry/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ workspace_id: ws.id }),
    });
    const status = ((await beat.json()) as { status?: string }).status;
    if (status !== "online") throw new Error(`workspace ${ws.id} is ${status} after its heartbeat`);
  }

  const pool = (origin: string) => {
    const made = new Pool(origin, { connections: Math.max(CONCURRENCY, 1), pipelining: 1 });
    pools.push(made);
    return made;
  };
  const agentPool = pool(agentUrl);
  const streamerPool = pool(streamerUrl);
  const platformPool = pool(platform.process.url);
  const asCaller = { authorization: `Bearer ${tokens.get(caller.id)}` };
  const direct = sender(agentPool, "/", { [INBOUND_TOKEN_HEADER]: inbound.get("agent") ?? "" });
  const asPlatform = { [INBOUND_TOKEN_HEADER]: inbound.get("streamer") ?? "" };
  const proxied = sender(platformPool, `/workspaces/${target.id}/a2a`, asCaller);

  // Warm-up, unrecorded.
  await interleaved(WARMUP, WARMUP, 1, direct, proxied);
  await interleaved(WARMUP, WARMUP, CONCURRENCY, direct, proxied);

  const started = performance.now();
  const [seqDirect, seqProxied] = await interleaved(N, BLOCK, 1, direct, proxied);
  console.error(`sequential done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const [conDirect, conProxied] = await interleaved(N, BLOCK * 2, CONCURRENCY, direct, proxied);
  console.error(`concurrent done in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const firstDirect: number[] = [];
  const firstProxied: number[] = [];
  const streamDirect = streamSender(streamerPool, "/", asPlatform, firstDirect);
  const streamProxied = streamSender(platformPool, `/workspaces/${streaming.id}/a2a`, asCaller, firstProxied);
  await interleaved(
    20,
    20,
    1,
    streamSender(streamerPool, "/", asPlatform, []),
    streamSender(platformPool, `/workspaces/${streaming.id}/a2a`, asCaller, []),
  );
  const [strDirect, strProxied] = await interleaved(STREAM_N, 20, 1, streamDirect, streamProxied);

  console.log(`\nstart: ${atStart}\nend:   ${machine()}`);
  report(`a2a message/send, sequential, N=${N} per path`, seqDirect, seqProxied, false);
  report(`a2a message/send, ${CONCURRENCY} in flight, N=${N} per path`, conDirect, conProxied, true);
  report(
    `a2a message/stream, time to first event, N=${STREAM_N} per path`,
    { ...strDirect, latencies: firstDirect },
    { ...strProxied, latencies: firstProxied },
    false,
  );
}

await runBench(main, {
  hardLimitMs: HARD_LIMIT_MS,
  cleanup: async () => {
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
    await agent?.close(100);
    if (streamer?.listening) {
      streamer.closeAllConnections();
      streamer.close();
      await once(streamer, "close");
    }
    await platform?.close();
  },
});
