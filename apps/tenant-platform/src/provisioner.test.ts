import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.ts";
import { buildAgentHostResolver } from "./provisioner.ts";

describe("buildAgentHostResolver", () => {
  it("asks the Docker engine for container names only on a user-defined network of the docker backend", () => {
    expect(buildAgentHostResolver(loadConfig({ WORKSPACE_NETWORK: "molecule" }))).toBeTypeOf("function");
    expect(buildAgentHostResolver(loadConfig({ WORKSPACE_NETWORK: "bridge" }))).toBeUndefined();
    expect(buildAgentHostResolver(loadConfig({ WORKSPACE_NETWORK: "host" }))).toBeUndefined();
    const fly = loadConfig({
      CONTAINER_BACKEND: "flyio",
      FLY_API_TOKEN: "fly-token",
      FLY_WORKSPACE_APP: "app",
      WORKSPACE_NETWORK: "molecule",
    });
    expect(buildAgentHostResolver(fly)).toBeUndefined();
  });

  it("falls back to the system resolver for names that are not Molecule containers", async () => {
    const resolve = buildAgentHostResolver(loadConfig({ WORKSPACE_NETWORK: "molecule" }));
    const addresses = await resolve?.("localhost");
    expect(addresses?.some((entry) => entry.address === "127.0.0.1" || entry.address === "::1")).toBe(true);
  });
});
