import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlaneProcess } from "../test-support/control-plane.ts";
import { metricValue } from "../test-support/metrics.ts";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import { freePort, killAllPlatformProcesses, startPlatformProcess } from "../test-support/process.ts";

/**
 * Both services' main() with METRICS_PORT: `GET /metrics` without a token on 127.0.0.1 at that port (or on
 * METRICS_HOST), the admin token still needed on the main port, and the process series main() turns on.
 */
let database: TestDatabase;
const stops: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await Promise.all(stops.map((stop) => stop()));
  await killAllPlatformProcesses();
  await database?.drop();
});

async function checkMetricsPort(
  metricsPort: number,
  mainUrl: string,
  adminToken: string,
  host = "127.0.0.1",
): Promise<string> {
  const open = await fetch(`http://${host}:${metricsPort}/metrics`);
  expect(open.status).toBe(200);
  const text = await open.text();
  expect(metricValue(text, "molecule_process_resident_memory_bytes")).toBeGreaterThan(0);
  expect((await fetch(`${mainUrl}/metrics`)).status).toBe(401);
  const admin = await fetch(`${mainUrl}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } });
  expect(admin.status).toBe(200);
  return text;
}

describe("METRICS_PORT", () => {
  it("the tenant platform serves /metrics there without a token", async () => {
    const metricsPort = await freePort();
    const platform = await startPlatformProcess({
      env: { DATABASE_URL: database.url, CONTAINER_BACKEND: "docker", METRICS_PORT: String(metricsPort) },
    });
    stops.push(() => platform.kill());
    await platform.call("GET", "/health");
    const text = await checkMetricsPort(metricsPort, platform.url, platform.adminToken);
    expect(
      metricValue(text, "molecule_http_request_duration_seconds_count", { route: "/health" }),
    ).toBeGreaterThan(0);
  }, 120_000);

  it("the control plane serves /metrics there without a token, on the address METRICS_HOST names", async () => {
    // 127.0.0.2 is loopback too (all of 127/8 is), and a socket bound to it is not reachable at 127.0.0.1.
    const metricsPort = await freePort();
    const cp = await startControlPlaneProcess({
      env: { METRICS_PORT: String(metricsPort), METRICS_HOST: "127.0.0.2" },
    });
    stops.push(() => cp.kill());
    const text = await checkMetricsPort(metricsPort, cp.url, cp.adminToken, "127.0.0.2");
    expect(text).toContain("# TYPE molecule_orgs gauge");
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toMatchObject({
      cause: { code: "ECONNREFUSED" },
    });
  }, 120_000);
});
