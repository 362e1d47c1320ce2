import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ConfigError,
  dockerHostUrl,
  isStrictEnvironment,
  MOLECULE_ENVIRONMENTS,
  parseEnv,
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
    const values = parseEnv(Schema, { OPERATION_LEASE_SECONDS: "12", DATABASE_URL: "postgres://db/x" });
    expect(serviceConfig(values, "http://cp.example")).toEqual({
      environment: "development",
      http: { port: 9000, host: "0.0.0.0", maxBodyBytes: 256 * 1024, publicUrl: "http://cp.example" },
      data: { dir: "./.data/x", databaseUrl: "postgres://db/x" },
      deployment: "local",
      operations: { leaseMs: 12_000, maxAttempts: 5 },
      logLevel: "info",
      reconcile: { intervalMs: 30 * 60_000, deleteOrphans: false, orphanGraceMs: 60 * 60_000 },
    });
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
