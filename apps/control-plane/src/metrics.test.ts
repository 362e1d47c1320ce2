import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labelValues, metricValue } from "../../../test-support/metrics.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

const REQUESTS = "molecule_http_request_duration_seconds_count";

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await createTestControlPlane();
});
afterAll(() => cp.close());

async function scrape(): Promise<string> {
  const response = await cp.admin("GET", "/metrics");
  expect(response.status).toBe(200);
  return response.text;
}

describe("GET /metrics on the control plane", () => {
  it("refuses without the admin token (401), and with a tenant's credential", async () => {
    const anonymous = await cp.app.request("/metrics");
    expect(anonymous.status).toBe(401);
    const body = (await anonymous.json()) as { error: { code: string; requestId: string } };
    expect(body.error).toMatchObject({ code: "unauthorized", requestId: expect.stringMatching(/^req_/) });
    const tenant = await cp.createOrg("metrics-tenant");
    const refused = await cp.app.request("/metrics", {
      headers: { authorization: `Bearer ${tenant.credential}` },
    });
    expect(refused.status).toBe(401);
  });

  it("answers the admin in Prometheus' text format", async () => {
    const response = await cp.app.request("/metrics", {
      headers: { authorization: `Bearer ${cp.deps.settings.adminToken as string}` },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    expect(text).toContain("# TYPE molecule_orgs gauge");
    expect(text).toContain("# TYPE molecule_operations gauge");
  });

  it("counts requests by route pattern, operations by kind and outcome, and orgs by status", async () => {
    const before = await scrape();
    expect((await cp.admin("GET", "/cp/orgs/no-such-org")).status).toBe(404);
    await cp.createOrg("counted");
    await cp.runner.drain();
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) =>
      metricValue(after, name, labels) - metricValue(before, name, labels);
    expect(delta(REQUESTS, { method: "GET", route: "/cp/orgs/:slug", status: "404" })).toBe(1);
    expect(delta(REQUESTS, { method: "POST", route: "/cp/orgs", status: "201" })).toBe(1);
    expect(labelValues(after, REQUESTS, "route").some((route) => route.includes("no-such-org"))).toBe(false);
    expect(
      delta("molecule_operation_attempt_duration_seconds_count", { outcome: "succeeded" }),
    ).toBeGreaterThan(0);
    expect(delta("molecule_orgs")).toBe(1);
  });
});
