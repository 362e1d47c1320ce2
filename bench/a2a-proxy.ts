/**
 * An A2A round trip through the tenant platform's proxy (`POST /workspaces/:id/a2a`, workspace → workspace with the
 * caller's own token) against a direct call to the same agent and against a bare proxy (the ceiling), all measured in
 * the same run, on each database in turn (PostgreSQL, then the embedded one).
 *
 * The platform runs as its own process (test-support/process.ts), on a fresh PostgreSQL database or on its embedded
 * database in a fresh data folder, allowing plain HTTP agent URLs on loopback. The agent is the SDK's A2A server
 * (`startA2AServer`) answering with the text it got, in this process, on 127.0.0.1. Three external workspaces
 * (caller, target, streamer) are created and registered with the admin token over the API (which checks their URLs)
 * and heartbeated online with their own tokens. Both agents require the inbound token their registration answered,
 * as an agent behind the platform does; the direct path sends it itself, so every path pays for the check.
 *
 * The ceiling is bench/ceiling-proxy.ts, its own process too: `node:http` and an undici `Pool`, one bearer token
 * compared in memory, the body forwarded with the inbound token and the answer piped back; no database, framework, log
 * or policy. On this machine (client, proxy and agent on 2 cores) it bounds what any proxy in Node can reach, so the
 * platform is reported against it as well as against the direct call.
 *
 * The client is an undici Pool with keep-alive per origin, the same for every path; every answer is checked (HTTP 200,
 * the request's id, the echoed text) and a mismatch counts as an error.
 *
 * - `message/send`, one at a time: N per path, in interleaved blocks (the order rotating) so machine noise hits all.
 * - `message/send`, BENCH_CONCURRENCY in flight: the same, with throughput.
 * - `message/stream`: time to the first event, against a small SSE agent in this process that writes a `working`
 *   status update at once and the final message right after (the SDK server has no streaming).
 *
 *   pnpm exec tsx bench/a2a-proxy.ts
 *   BENCH_N=2000 (per path and variant)  BENCH_CONCURRENCY=16  BENCH_STREAM_N=200
 *   BENCH_DATABASE=postgres,embedded (either or both)  BENCH_CPU_PROF=<folder> (profile the platform process)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import {
  INBOUND_TOKEN_HEADER,
  type InboundAuth,
  messageText,
  type StartedA2AServer,
  startA2AServer,
} from "@molecule/agent-sdk";
import { Pool } from "undici";
import { REPO_ROOT } from "../test-support/process.ts";
import {
  type BenchProcess,
  benchDatabases,
  combine,
  drive,
  envNumber,
  errorText,
  type LoadResult,
  machine,
  num,
  runBench,
  startBenchPlatform,
  startEmbeddedBenchPlatform,
  summarize,
} from "./lib.ts";

const N = Math.round(envNumber("BENCH_N", 2000));
const CONCURRENCY = Math.round(envNumber("BENCH_CONCURRENCY", 16));
const STREAM_N = Math.round(envNumber("BENCH_STREAM_N", 200));
const BLOCK = 100;
const WARMUP = 200;
const HARD_LIMIT_MS = 360_000;

let platform: BenchProcess | undefined;
let agent: StartedA2AServer | undefined;
let streamer: Server | undefined;
const pools: Pool[] = [];
const ceilings: ChildProcess[] = [];
/** Each agent's inbound token, from its registration with the platform of the current run. */
const inbound = new Map<"agent" | "streamer", string>();
const authOf = (which: "agent" | "streamer") => (): InboundAuth => {
  const token = inbound.get(which);
  return token ? { token } : "pending";
};

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

/** `count` requests of each sender at `concurrency`, in blocks rotating which goes first. */
async function interleaved(
  count: number,
  blockSize: number,
  concurrency: number,
  senders: ((i: number) => Promise<string | undefined>)[],
): Promise<LoadResult[]> {
  const runs: LoadResult[][] = senders.map(() => []);
  for (let done = 0, block = 0; done < count; done += blockSize, block++) {
    const size = Math.min(blockSize, count - done);
    for (let k = 0; k < senders.length; k++) {
      const which = (block + k) % senders.length;
      const send = senders[which];
      if (!send) continue;
      runs[which]?.push(await drive({ concurrency, count: size, send: (i) => send(done + i) }));
    }
  }
  return runs.map(combine);
}

interface Measured {
  direct: LoadResult;
  ceiling: LoadResult;
  platform: LoadResult;
}

function report(title: string, m: Measured, withRps: boolean): void {
  const d = summarize(m.direct.latencies);
  const c = summarize(m.ceiling.latencies);
  const p = summarize(m.platform.latencies);
  const rps = (r: LoadResult) => r.requests / (r.elapsedMs / 1000);
  console.log(`\n${title} (ms)`);
  console.log(
    `${"".padEnd(24)}${"p50".padStart(8)}${"p99".padStart(8)}${"mean".padStart(8)}${withRps ? "     rps" : ""}  errors`,
  );
  for (const [name, result, s] of [
    ["direct", m.direct, d],
    ["ceiling (bare proxy)", m.ceiling, c],
    ["via platform", m.platform, p],
  ] as const) {
    console.log(
      `${name.padEnd(24)}${num(s.p50)}${num(s.p99)}${num(s.mean)}${withRps ? num(rps(result), 8, 0) : ""}  ${errorText(result.errors)}`,
    );
  }
  for (const [name, a, b, ra, rb] of [
    ["platform/direct", p, d, m.platform, m.direct],
    ["ceiling/direct", c, d, m.ceiling, m.direct],
    ["platform/ceiling", p, c, m.platform, m.ceiling],
  ] as const) {
    console.log(
      `${`ratio ${name}`.padEnd(24)}${num(a.p50 / b.p50)}${num(a.p99 / b.p99)}${num(a.mean / b.mean)}${withRps ? num(rps(ra) / rps(rb)) : ""}`,
    );
  }
  console.log(
    `${"added by platform".padEnd(24)}${num(p.p50 - d.p50)}${num(p.p99 - d.p99)}${num(p.mean - d.mean)}`,
  );
  console.log(
    `${"added by ceiling".padEnd(24)}${num(c.p50 - d.p50)}${num(c.p99 - d.p99)}${num(c.mean - d.mean)}`,
  );
}

/** bench/ceiling-proxy.ts as its own process; resolves with its URL once it listens. */
async function startCeiling(routes: Record<string, { url: string; inboundToken: string }>, token: string) {
  const child = spawn(process.execPath, ["--import", "tsx", join(REPO_ROOT, "bench/ceiling-proxy.ts")], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", CEILING_ROUTES: JSON.stringify(routes), CEILING_TOKEN: token },
    stdio: ["ignore", "pipe", "inherit"],
  });
  ceilings.push(child);
  let seen = "";
  for await (const chunk of child.stdout) {
    seen += String(chunk);
    const port = /listening (\d+)/.exec(seen)?.[1];
    if (port) return `http://127.0.0.1:${port}`;
  }
  throw new Error(`the ceiling proxy exited before listening: ${seen}`);
}

async function runOn(database: "postgres" | "embedded"): Promise<void> {
  const atStart = machine();
  platform = database === "postgres" ? await startBenchPlatform() : await startEmbeddedBenchPlatform();
  const agentUrl = `http://127.0.0.1:${agent?.port}`;
  const streamerUrl = `http://127.0.0.1:${(streamer?.address() as AddressInfo).port}`;

  const ids = new Map<"caller" | "agent" | "streamer", string>();
  const tokens = new Map<"caller" | "agent" | "streamer", string>();
  for (const [which, url] of [
    ["caller", null],
    ["agent", `${agentUrl}/`],
    ["streamer", `${streamerUrl}/`],
  ] as const) {
    const created = await platform.process.call("POST", "/workspaces", {
      name: `bench-${which}`,
      external: true,
    });
    if (created.status !== 202) throw new Error(`create answered ${created.status}`);
    const id: string = created.body.workspace.id;
    const registered = await platform.process.call("POST", "/registry/register", { id, url });
    if (registered.status !== 200) throw new Error(`register answered ${registered.status}`);
    const token: string = registered.body.auth_token;
    if (which !== "caller") inbound.set(which, registered.body.inbound_token);
    ids.set(which, id);
    tokens.set(which, token);
    const beat = await fetch(`${platform.process.url}/registry/heartbeat`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ workspace_id: id }),
    });
    const status = ((await beat.json()) as { status?: string }).status;
    if (status !== "online") throw new Error(`workspace ${id} is ${status} after its heartbeat`);
  }
  const callerToken = tokens.get("caller") ?? "";
  const ceilingUrl = await startCeiling(
    {
      "/agent": { url: `${agentUrl}/`, inboundToken: inbound.get("agent") ?? "" },
      "/streamer": { url: `${streamerUrl}/`, inboundToken: inbound.get("streamer") ?? "" },
    },
    callerToken,
  );

  const pool = (origin: string) => {
    const made = new Pool(origin, { connections: Math.max(CONCURRENCY, 1), pipelining: 1 });
    pools.push(made);
    return made;
  };
  const agentPool = pool(agentUrl);
  const streamerPool = pool(streamerUrl);
  const ceilingPool = pool(ceilingUrl);
  const platformPool = pool(platform.process.url);
  const asCaller = { authorization: `Bearer ${callerToken}` };
  const sends = [
    sender(agentPool, "/", { [INBOUND_TOKEN_HEADER]: inbound.get("agent") ?? "" }),
    sender(ceilingPool, "/agent", asCaller),
    sender(platformPool, `/workspaces/${ids.get("agent")}/a2a`, asCaller),
  ];
  const streamPaths = (firsts: number[][]) => [
    streamSender(
      streamerPool,
      "/",
      { [INBOUND_TOKEN_HEADER]: inbound.get("streamer") ?? "" },
      firsts[0] ?? [],
    ),
    streamSender(ceilingPool, "/streamer", asCaller, firsts[1] ?? []),
    streamSender(platformPool, `/workspaces/${ids.get("streamer")}/a2a`, asCaller, firsts[2] ?? []),
  ];
  const measured = ([direct, ceiling, platform]: LoadResult[]): Measured => {
    if (!direct || !ceiling || !platform) throw new Error("a path was not measured");
    return { direct, ceiling, platform };
  };

  // Warm-up, unrecorded.
  await interleaved(WARMUP, WARMUP, 1, sends);
  await interleaved(WARMUP, WARMUP, CONCURRENCY, sends);

  const started = performance.now();
  const sequential = measured(await interleaved(N, BLOCK, 1, sends));
  console.error(`${database}: sequential done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const concurrent = measured(await interleaved(N, BLOCK * 2, CONCURRENCY, sends));
  console.error(`${database}: concurrent done in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  await interleaved(20, 20, 1, streamPaths([[], [], []]));
  const firsts: number[][] = [[], [], []];
  const stream = measured(await interleaved(STREAM_N, 20, 1, streamPaths(firsts)));
  const atEnd = machine();
  await platform.close();
  await stopCeilings();

  console.log(`\n=== ${database} database ===\nstart: ${atStart}\nend:   ${atEnd}`);
  report(`a2a message/send, sequential, N=${N} per path`, sequential, false);
  report(`a2a message/send, ${CONCURRENCY} in flight, N=${N} per path`, concurrent, true);
  report(
    `a2a message/stream, time to first event, N=${STREAM_N} per path`,
    {
      direct: { ...stream.direct, latencies: firsts[0] ?? [] },
      ceiling: { ...stream.ceiling, latencies: firsts[1] ?? [] },
      platform: { ...stream.platform, latencies: firsts[2] ?? [] },
    },
    false,
  );
}

async function stopCeilings(): Promise<void> {
  await Promise.all(
    ceilings.splice(0).map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    }),
  );
}

async function main(): Promise<void> {
  const databases = benchDatabases();
  agent = await startA2AServer({
    host: "127.0.0.1",
    port: 0,
    card: { name: "bench-echo", description: "answers with the text it got", skills: [] },
    inbound: authOf("agent"),
    onMessage: async (message) => ({ parts: [{ kind: "text", text: messageText(message) }] }),
  });
  streamer = await startStreamingAgent(authOf("streamer"));
  for (const database of databases) await runOn(database);
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
    await stopCeilings();
    await platform?.close();
  },
});
