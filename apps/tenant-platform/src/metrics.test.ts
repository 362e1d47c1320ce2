import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { ServiceMetrics, serveMetrics } from "@molecule/service-kit/metrics";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labelValues, metricValue } from "../../../test-support/metrics.ts";
import { ADMIN_TOKEN, createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { waitFor } from "../../../test-support/wait.ts";

const REQUESTS = "molecule_http_request_duration_seconds_count";
/** What the test agent answers every A2A call with: its length is what the byte counter must add. */
const ANSWER = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  result: { kind: "message", role: "agent", parts: [] },
});

let platform: TestPlatform;
let fake: FakeProvisioner;
let agent: Server;
let agentUrl: string;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
  agent = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(ANSWER));
  });
  await new Promise<void>((resolve) => agent.listen(0, "127.0.0.1", resolve));
  agentUrl = `http://127.0.0.1:${(agent.address() as AddressInfo).port}/`;
  await platform.listen();
});
afterAll(async () => {
  agent.closeAllConnections();
  await new Promise((resolve) => agent.close(resolve));
  await platform.close();
});

async function scrape(): Promise<string> {
  const response = await platform.app.request("/metrics", {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  expect(response.status).toBe(200);
  return response.text();
}

/** A workspace made through the API and its agent registered at `url`, with its bearer token. */
async function registered(name: string, url: string | null = null): Promise<{ id: string; token: string }> {
  const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
  expect(created.status).toBe(202);
  await platform.runner.drain();
  const id: string = created.body.workspace.id;
  // The served platform's runner loop may be the one provisioning it.
  const boot = await waitFor(
    "the workspace is provisioned",
    async () => fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN,
  );
  const response = await platform.call("POST", "/registry/register", { token: boot, body: { id, url } });
  expect(response.status).toBe(200);
  return { id, token: response.body.auth_token };
}

describe("GET /metrics", () => {
  it("refuses without the admin token (401) and with a workspace token (403)", async () => {
    const anonymous = await platform.call("GET", "/metrics", { token: null });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error).toMatchObject({
      code: "unauthorized",
      requestId: expect.stringMatching(/^req_/),
    });
    const { token } = await registered("not-admin");
    const workspace = await platform.call("GET", "/metrics", { token });
    expect(workspace.status).toBe(403);
    expect(workspace.body.error.code).toBe("forbidden");
  });

  it("answers the admin in Prometheus' text format", async () => {
    const response = await platform.app.request("/metrics", {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    expect(text).toContain("# TYPE molecule_http_request_duration_seconds histogram");
    expect(text).toContain("# TYPE molecule_workspaces gauge");
  });

  it("counts requests by route pattern and status, never by path", async () => {
    const before = await scrape();
    const unknownId = "ws_0000000000zzzzzzzzzzzzzzzz";
    expect((await platform.call("GET", `/workspaces/${unknownId}`)).status).toBe(404);
    expect((await platform.call("GET", "/no/such/path/42")).status).toBe(404);
    const after = await scrape();
    const labels = { method: "GET", route: "/workspaces/:id", status: "404" };
    expect(metricValue(after, REQUESTS, labels) - metricValue(before, REQUESTS, labels)).toBe(1);
    const unmatched = { method: "GET", route: "/*", status: "404" };
    expect(metricValue(after, REQUESTS, unmatched) - metricValue(before, REQUESTS, unmatched)).toBe(1);
    const routes = labelValues(after, REQUESTS, "route");
    expect(routes).not.toContain(`/workspaces/${unknownId}`);
    expect(routes.some((route) => route.includes("no/such"))).toBe(false);
    expect(after).not.toContain(unknownId);
  });

  it("counts operation attempts by kind and outcome, and workspaces by status and backend", async () => {
    const attempts = (text: string) =>
      metricValue(text, "molecule_operation_attempt_duration_seconds_count", {
        kind: "provision",
        outcome: "succeeded",
      });
    const workspaces = (text: string) => metricValue(text, "molecule_workspaces", { backend: "fake" });
    const before = await scrape();
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "operated", runtime: "echo" },
    });
    expect(created.status).toBe(202);
    expect(workspaces(await scrape()) - workspaces(before)).toBe(1);
    await platform.runner.drain();
    // The served platform's own runner loop may be the one that ran it.
    const after = await waitFor("the attempt is counted", async () => {
      const text = await scrape();
      return attempts(text) > attempts(before) ? text : undefined;
    });
    expect(attempts(after) - attempts(before)).toBe(1);
    expect(
      metricValue(after, "molecule_operations", { kind: "provision", status: "succeeded" }),
    ).toBeGreaterThan(0);
  });

  it("shows each warm pool's target and its members by state", async () => {
    const pool = { runtime: "echo", tier: "2" };
    const set = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 2 } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(metricValue(await scrape(), "molecule_pool_target_size", pool)).toBe(2);
    // The filler starts two members; on the fake backend no agent asks for a claim, so they stay starting.
    const filled = await waitFor("the filler starts the members", async () => {
      const text = await scrape();
      return metricValue(text, "molecule_pool_members", { ...pool, state: "starting" }) === 2
        ? text
        : undefined;
    });
    expect(metricValue(filled, "molecule_pool_members", { ...pool, state: "ready" })).toBe(0);
    expect(metricValue(filled, "molecule_pool_members", { ...pool, state: "claimed" })).toBe(0);
    expect(
      (await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } })).status,
    ).toBe(200);
    expect(metricValue(await scrape(), "molecule_pool_target_size", pool)).toBe(0);
  });

  it("counts heartbeats served by the raw route, and those recorded, batched or not", async () => {
    const { id, token } = await registered("beating");
    // Registering made it online; `degraded` is a change again (the steady state below stays degraded).
    const beat = () =>
      platform.callServed("POST", "/registry/heartbeat", {
        token,
        body: { workspace_id: id, status: "degraded", detail: "metrics test" },
      });
    const recorded = (text: string) => metricValue(text, "molecule_heartbeats_recorded_total");
    const served = (text: string) =>
      metricValue(text, REQUESTS, { method: "POST", route: "/registry/heartbeat", status: "200" });
    const start = await scrape();
    expect((await beat()).body.status).toBe("degraded"); // a change: written at once
    const changed = await scrape();
    expect(recorded(changed) - recorded(start)).toBe(1);
    expect(served(changed) - served(start)).toBe(1);
    // Once this process has heard of the change, the steady state is answered from memory and written in batches.
    await waitFor("a beat answered from memory", async () => {
      await beat();
      return platform.heartbeats.buffered > 0 ? true : undefined;
    });
    await platform.heartbeats.flush();
    const before = await scrape();
    expect((await beat()).status).toBe(200);
    expect((await beat()).status).toBe(200);
    const buffered = await scrape();
    expect(metricValue(buffered, "molecule_heartbeats_buffered")).toBe(1);
    await platform.heartbeats.flush();
    const after = await scrape();
    expect(served(after) - served(before)).toBe(2);
    expect(recorded(after) - recorded(before)).toBe(1); // one for the workspace's batch of two
    expect(metricValue(after, "molecule_heartbeats_buffered")).toBe(0);
  });

  it("counts A2A calls through the raw route, their upstream time and the bytes relayed", async () => {
    const caller = await registered("caller");
    const target = await registered("target", agentUrl);
    for (const ws of [caller, target]) {
      await platform.call("POST", "/registry/heartbeat", { token: ws.token, body: { workspace_id: ws.id } });
    }
    const before = await scrape();
    const body = {
      jsonrpc: "2.0",
      id: 1,
      method: "message/send",
      params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text: "hi" }] } },
    };
    const answer = await platform.callServed("POST", `/workspaces/${target.id}/a2a`, {
      token: caller.token,
      body,
    });
    expect(answer.status).toBe(200);
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) =>
      metricValue(after, name, labels) - metricValue(before, name, labels);
    const route = { method: "POST", route: "/workspaces/:id/a2a", status: "200" };
    expect(delta(REQUESTS, route)).toBe(1);
    expect(delta("molecule_a2a_upstream_duration_seconds_count", { streamed: "false" })).toBe(1);
    expect(delta("molecule_a2a_response_bytes_total", { streamed: "false" })).toBe(Buffer.byteLength(ANSWER));
    expect(after).not.toContain(target.id);
  });
});

describe("METRICS_PORT", () => {
  it("serves /metrics on 127.0.0.1 without a token, and nothing else", async () => {
    const server = await serveMetrics(platform.deps.metrics, 0, platform.deps.logger);
    try {
      const address = server.address() as AddressInfo;
      expect(address.address).toBe("127.0.0.1");
      const response = await fetch(`http://127.0.0.1:${address.port}/metrics`);
      expect(response.status).toBe(200);
      expect(await response.text()).toContain("molecule_workspaces");
      expect((await fetch(`http://127.0.0.1:${address.port}/workspaces`)).status).toBe(404);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("docs/grafana-dashboard.json", () => {
  it("queries only series the services export", async () => {
    const dashboard = readFileSync(new URL("../../../docs/grafana-dashboard.json", import.meta.url), "utf8");
    const queried = new Set(
      [...dashboard.matchAll(/molecule_[a-z0-9_]+/g)].map(([name]) =>
        name.replace(/_(bucket|count|sum)$/, ""),
      ),
    );
    expect(queried.size).toBeGreaterThan(5);
    // The tenant platform's series and the process series main() adds.
    const exported = `${await scrape()}${await new ServiceMetrics({ processMetrics: true }).text()}`;
    for (const name of queried) expect(exported, name).toContain(`# TYPE ${name} `);
  });
});
