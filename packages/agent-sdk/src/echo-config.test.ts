import { describe, expect, it } from "vitest";
import { ConfigError, loadEchoConfig } from "./echo-config.ts";

describe("loadEchoConfig", () => {
  it("applies the defaults", () => {
    expect(loadEchoConfig({ WORKSPACE_ID: "ws_1", PLATFORM_URL: "http://127.0.0.1:8080" })).toEqual({
      workspaceId: "ws_1",
      platformUrl: "http://127.0.0.1:8080",
      bootToken: undefined,
      port: 8000,
      host: "0.0.0.0",
      publicUrl: undefined,
      heartbeatIntervalMs: 30_000,
      stateDir: "/workspace/.molecule",
    });
  });

  it("takes the heartbeat interval the platform injects (HEARTBEAT_INTERVAL_SECONDS); HEARTBEAT_INTERVAL_MS wins", () => {
    const base = { WORKSPACE_ID: "ws_1", PLATFORM_URL: "http://p" };
    expect(loadEchoConfig({ ...base, HEARTBEAT_INTERVAL_SECONDS: "3" }).heartbeatIntervalMs).toBe(3_000);
    expect(
      loadEchoConfig({ ...base, HEARTBEAT_INTERVAL_SECONDS: "3", HEARTBEAT_INTERVAL_MS: "250" })
        .heartbeatIntervalMs,
    ).toBe(250);
    expect(() => loadEchoConfig({ ...base, HEARTBEAT_INTERVAL_SECONDS: "0" })).toThrow(
      "HEARTBEAT_INTERVAL_SECONDS must be an integer from 1 to 3600",
    );
  });

  it("reads every variable", () => {
    expect(
      loadEchoConfig({
        WORKSPACE_ID: "ws_1",
        PLATFORM_URL: "https://p.example",
        WORKSPACE_BOOT_TOKEN: "boot",
        AGENT_PORT: "0",
        AGENT_HOST: "127.0.0.1",
        AGENT_PUBLIC_URL: "http://agent:9000",
        HEARTBEAT_INTERVAL_MS: "1000",
        WORKSPACE_STATE_DIR: "/tmp/state",
      }),
    ).toEqual({
      workspaceId: "ws_1",
      platformUrl: "https://p.example",
      bootToken: "boot",
      port: 0,
      host: "127.0.0.1",
      publicUrl: "http://agent:9000",
      heartbeatIntervalMs: 1000,
      stateDir: "/tmp/state",
    });
  });

  it("names the variable that is wrong", () => {
    const base = { WORKSPACE_ID: "ws_1", PLATFORM_URL: "http://p" };
    const cases: [Record<string, string>, RegExp][] = [
      [{ PLATFORM_URL: "http://p" }, /^WORKSPACE_ID is required$/],
      [{ WORKSPACE_ID: "ws" }, /^PLATFORM_URL is required$/],
      [{ ...base, PLATFORM_URL: "p:80" }, /^PLATFORM_URL must be an http\(s\) URL/],
      [{ ...base, AGENT_PORT: "70000" }, /^AGENT_PORT must be an integer from 0 to 65535/],
      [{ ...base, AGENT_PORT: "8o" }, /^AGENT_PORT/],
      [{ ...base, HEARTBEAT_INTERVAL_MS: "5" }, /^HEARTBEAT_INTERVAL_MS/],
      [{ ...base, AGENT_PUBLIC_URL: "nope" }, /^AGENT_PUBLIC_URL/],
    ];
    for (const [env, message] of cases) {
      expect(() => loadEchoConfig(env)).toThrow(ConfigError);
      expect(() => loadEchoConfig(env)).toThrow(message);
    }
  });
});
