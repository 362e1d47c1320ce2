import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.ts";

describe("loadConfig", () => {
  it("has defaults a self-hoster can start with", () => {
    const config = loadConfig({});
    expect(config.http.port).toBe(8080);
    expect(config.data.dir).toBe("./.data");
    expect(config.workspaces.allowedRuntimes).toEqual(["echo"]);
    expect(config.liveness.staleAfterMs).toBe(90_000);
    expect(config.org.saas).toBe(false);
  });

  it("coerces and splits", () => {
    const config = loadConfig({
      PORT: "9000",
      ALLOWED_RUNTIMES: "echo, claude ,",
      HEARTBEAT_STALE_AFTER: "5",
    });
    expect(config.http.port).toBe(9000);
    expect(config.workspaces.allowedRuntimes).toEqual(["echo", "claude"]);
    expect(config.liveness.staleAfterMs).toBe(5_000);
  });

  it("stops with one line naming the variable", () => {
    expect(() => loadConfig({ PORT: "http" })).toThrow(/PORT/);
    expect(() => loadConfig({ ADMIN_TOKEN: "short" })).toThrow(/ADMIN_TOKEN/);
  });

  it("refuses production without an admin token or a secrets key", () => {
    expect(() => loadConfig({ MOLECULE_ENV: "production" })).toThrow(/ADMIN_TOKEN is required/);
    expect(() =>
      loadConfig({ MOLECULE_ENV: "production", ADMIN_TOKEN: "a-long-enough-admin-token" }),
    ).toThrow(/SECRETS_ENCRYPTION_KEY is required/);
  });

  it("MOLECULE_ORG_ID turns on SaaS mode", () => {
    expect(loadConfig({ MOLECULE_ORG_ID: "org_abc" }).org).toEqual({ id: "org_abc", saas: true });
  });
});
