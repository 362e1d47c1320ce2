import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ConfigError,
  dockerHostUrl,
  isStrictEnvironment,
  MOLECULE_ENVIRONMENTS,
  operationDeadlines,
  parseEnv,
  ratePerMinute,
  serviceConfig,
  serviceEnv,
} from "./config.ts";

const Schema = z.object({
  ...serviceEnv({ port: 9000, dataDir: "./.data/x" }),
  EXTRA: z.string().optional(),
});

describe("parseEnv", () => {
  it("applies defaults and treats an empty variable as unset", () => {
    const values = parseEnv(Schema, { PORT: "", LOG_LEVEL: undefined, EXTRA: "yes" });
    expect(values).toMatchObject({
      PORT: 9000,
      LOG_LEVEL: "info",
      MOLECULE_DATA_DIR: "./.data/x",
      EXTRA: "yes",
    });
  });

  it("throws one ConfigError line naming the bad variable", () => {
    expect(() => parseEnv(Schema, { MOLECULE_DEPLOYMENT: "Not OK" })).toThrow(ConfigError);
    expect(() => parseEnv(Schema, { MOLECULE_DEPLOYMENT: "Not OK" })).toThrow(
      "invalid configuration: MOLECULE_DEPLOYMENT: MOLECULE_DEPLOYMENT must be lower-case letters, digits and dashes",
    );
    expect(() => parseEnv(Schema, { PORT: "70000" })).toThrow(/^invalid configuration: PORT: /);
  });
});

describe("serviceConfig", () => {
  it("groups the shared settings, seconds turned into milliseconds", () => {
    const values = parseEnv(Schema, {
      OPERATION_LEASE_SECONDS: "12",
      DATABASE_URL: "postgres://db/x",
      OPERATION_RETENTION_DAYS: "2",
    });
    expect(serviceConfig(values, "http://cp.example")).toEqual({
      environment: "development",
      http: { port: 9000, host: "0.0.0.0", maxBodyBytes: 256 * 1024, publicUrl: "http://cp.example" },
      metrics: { port: null, host: "127.0.0.1" },
      data: { dir: "./.data/x", databaseUrl: "postgres://db/x" },
      deployment: "local",
      operations: { leaseMs: 12_000, maxAttempts: 5 },
      retention: {
        operationsMs: 2 * 24 * 3_600_000,
        backupRecordsMs: 90 * 24 * 3_600_000,
        sweepIntervalMs: 3_600_000,
      },
      logLevel: "info",
      rateLimitMaxKeys: 100_000,
      reconcile: { intervalMs: 30 * 60_000, deleteOrphans: false, orphanGraceMs: 60 * 60_000 },
    });
  });
});

describe("ratePerMinute", () => {
  const Limits = z.object({ RATE_LIMIT_X_PER_MINUTE: ratePerMinute("RATE_LIMIT_X_PER_MINUTE", 600) });

  it("defaults, takes a whole number, and 0 (no limit)", () => {
    expect(parseEnv(Limits, {}).RATE_LIMIT_X_PER_MINUTE).toBe(600);
    expect(parseEnv(Limits, { RATE_LIMIT_X_PER_MINUTE: "30" }).RATE_LIMIT_X_PER_MINUTE).toBe(30);
    expect(parseEnv(Limits, { RATE_LIMIT_X_PER_MINUTE: "0" }).RATE_LIMIT_X_PER_MINUTE).toBe(0);
  });

  it.each(["-1", "1.5", "lots"])("refuses %j naming the variable", (value) => {
    expect(() => parseEnv(Limits, { RATE_LIMIT_X_PER_MINUTE: value })).toThrow(
      /^invalid configuration: RATE_LIMIT_X_PER_MINUTE: RATE_LIMIT_X_PER_MINUTE must be/,
    );
  });
});

describe("METRICS_PORT and METRICS_HOST", () => {
  it("is a port, or unset; bound to loopback unless METRICS_HOST names another address", () => {
    expect(serviceConfig(parseEnv(Schema, { METRICS_PORT: "9464" }), "http://x").metrics).toEqual({
      port: 9464,
      host: "127.0.0.1",
    });
    expect(
      serviceConfig(parseEnv(Schema, { METRICS_PORT: "9464", METRICS_HOST: "::" }), "http://x").metrics,
    ).toEqual({ port: 9464, host: "::" });
    expect(() => parseEnv(Schema, { METRICS_PORT: "metrics" })).toThrow(
      /^invalid configuration: METRICS_PORT: /,
    );
    for (const host of ["all", "tenant-platform", "0.0.0.0:9464", " "]) {
      expect(() => parseEnv(Schema, { METRICS_HOST: host })).toThrow(
        "invalid configuration: METRICS_HOST: METRICS_HOST must be an IP address such as 127.0.0.1 or 0.0.0.0",
      );
    }
  });
});

describe("the reconciler's settings", () => {
  it("take seconds or a number with a unit", () => {
    const values = parseEnv(Schema, {
      RECONCILE_INTERVAL: "90",
      RECONCILE_DELETE_ORPHANS: "true",
      ORPHAN_GRACE: "15m",
    });
    expect(serviceConfig(values, "http://x").reconcile).toEqual({
      intervalMs: 90_000,
      deleteOrphans: true,
      orphanGraceMs: 15 * 60_000,
    });
    expect(
      serviceConfig(parseEnv(Schema, { RECONCILE_INTERVAL: "2h", ORPHAN_GRACE: "0" }), "http://x").reconcile,
    ).toMatchObject({ intervalMs: 2 * 3_600_000, orphanGraceMs: 0 });
  });

  it("refuse anything else with one line naming the variable", () => {
    for (const [name, value] of [
      ["RECONCILE_INTERVAL", "soon"],
      ["RECONCILE_INTERVAL", "0"],
      ["RECONCILE_INTERVAL", "-5m"],
      ["ORPHAN_GRACE", "1d"],
      ["RECONCILE_DELETE_ORPHANS", "yes"],
    ] as const) {
      expect(() => parseEnv(Schema, { [name]: value }), `${name}=${value}`).toThrow(
        new RegExp(`^invalid configuration: ${name}: ${name} must be`),
      );
    }
  });
});

describe("MOLECULE_ENV", () => {
  it("accepts both vocabularies and keeps the name as given", () => {
    for (const name of ["development", "test", "production", "dev", "staging", "prod"]) {
      expect(serviceConfig(parseEnv(Schema, { MOLECULE_ENV: name }), "http://x").environment).toBe(name);
    }
    expect(MOLECULE_ENVIRONMENTS).toHaveLength(6);
  });

  it("refuses any other name with one line", () => {
    expect(() => parseEnv(Schema, { MOLECULE_ENV: "Production" })).toThrow(
      /^invalid configuration: MOLECULE_ENV: /,
    );
    expect(() => parseEnv(Schema, { MOLECULE_ENV: "qa" })).toThrow(/^invalid configuration: MOLECULE_ENV: /);
  });

  it("is strict (production checks) for prod and production only", () => {
    expect(MOLECULE_ENVIRONMENTS.filter(isStrictEnvironment)).toEqual(["production", "prod"]);
  });
});

describe("dockerHostUrl", () => {
  it("is loopback on the host network and the Docker host from a bridge", () => {
    expect(dockerHostUrl("host", 8080)).toBe("http://127.0.0.1:8080");
    expect(dockerHostUrl("bridge", 8090)).toBe("http://host.docker.internal:8090");
  });
});

describe("operationDeadlines", () => {
  const Deadlines = z.object({ OPERATION_DEADLINES: operationDeadlines({ provision: 900, destroy: 600 }) });

  it("gives every kind its default when unset, in milliseconds", () => {
    expect(parseEnv(Deadlines, {}).OPERATION_DEADLINES).toEqual({ provision: 900_000, destroy: 600_000 });
  });

  it("overrides the kinds it names and keeps the rest", () => {
    expect(parseEnv(Deadlines, { OPERATION_DEADLINES: " provision=1200 , " }).OPERATION_DEADLINES).toEqual({
      provision: 1_200_000,
      destroy: 600_000,
    });
  });

  it.each([
    "provison=900",
    "provision=0",
    "provision=1.5",
    "provision",
    "destroy=-1",
    "provision=90s",
  ])("refuses %s with one line naming the variable, the pair and the kinds", (value) => {
    expect(() => parseEnv(Deadlines, { OPERATION_DEADLINES: value })).toThrow(
      `invalid configuration: OPERATION_DEADLINES: "${value}" is not kind=seconds with seconds above 0 and a kind among provision, destroy`,
    );
  });
});
