import { describe, expect, it } from "vitest";
import { BackendSelectionError, type BackendSettings, selectBackend } from "./select.ts";

const fly = { FLY_API_TOKEN: "fo1_token", FLY_WORKSPACE_APP: "molecule-ws" };

describe("selectBackend", () => {
  const table: Array<[string, BackendSettings, string]> = [
    ["nothing set", {}, "docker"],
    ["explicit docker", { CONTAINER_BACKEND: "docker" }, "docker"],
    [
      "explicit docker wins over an org id",
      { CONTAINER_BACKEND: "docker", MOLECULE_ORG_ID: "org_1" },
      "docker",
    ],
    ["unset with empty org id", { MOLECULE_ORG_ID: "" }, "docker"],
    ["empty backend with empty org id", { CONTAINER_BACKEND: "", MOLECULE_ORG_ID: "  " }, "docker"],
    ["unset with an org id", { MOLECULE_ORG_ID: "org_1" }, "controlplane"],
    ["explicit controlplane", { CONTAINER_BACKEND: "controlplane" }, "controlplane"],
    ["explicit flyio", { CONTAINER_BACKEND: "flyio", ...fly }, "flyio"],
    [
      "explicit flyio wins over an org id",
      { CONTAINER_BACKEND: "flyio", MOLECULE_ORG_ID: "org_1", ...fly },
      "flyio",
    ],
  ];

  it.each(table)("%s → %s", (_label, settings, backend) => {
    expect(selectBackend(settings).backend).toBe(backend);
  });

  it("flyio carries its settings and defaults the region to ord", () => {
    expect(selectBackend({ CONTAINER_BACKEND: "flyio", ...fly })).toEqual({
      backend: "flyio",
      flyApiToken: "fo1_token",
      flyWorkspaceApp: "molecule-ws",
      flyRegion: "ord",
    });
    expect(selectBackend({ CONTAINER_BACKEND: "flyio", FLY_REGION: "ams", ...fly })).toMatchObject({
      flyRegion: "ams",
    });
  });

  it("controlplane carries the URL override when set", () => {
    expect(selectBackend({ MOLECULE_ORG_ID: "org_1" })).toEqual({
      backend: "controlplane",
      cpProvisionUrl: undefined,
    });
    expect(selectBackend({ MOLECULE_ORG_ID: "org_1", CP_PROVISION_URL: "https://cp.example/cp" })).toEqual({
      backend: "controlplane",
      cpProvisionUrl: "https://cp.example/cp",
    });
  });

  const failures: Array<[string, BackendSettings, string, RegExp]> = [
    [
      "unknown backend",
      { CONTAINER_BACKEND: "kubernetes" },
      "CONTAINER_BACKEND",
      /CONTAINER_BACKEND="kubernetes"/,
    ],
    [
      "flyio without token",
      { CONTAINER_BACKEND: "flyio", FLY_WORKSPACE_APP: "a" },
      "FLY_API_TOKEN",
      /FLY_API_TOKEN/,
    ],
    [
      "flyio with empty token",
      { CONTAINER_BACKEND: "flyio", ...fly, FLY_API_TOKEN: " " },
      "FLY_API_TOKEN",
      /FLY_API_TOKEN/,
    ],
    [
      "flyio without app",
      { CONTAINER_BACKEND: "flyio", FLY_API_TOKEN: "t" },
      "FLY_WORKSPACE_APP",
      /FLY_WORKSPACE_APP/,
    ],
  ];

  it.each(failures)("%s fails naming %s", (_label, settings, variable, message) => {
    let caught: unknown;
    try {
      selectBackend(settings);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(BackendSelectionError);
    const error = caught as BackendSelectionError;
    expect(error.variable).toBe(variable);
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain("\n");
  });

  it("never echoes the fly token in an error", () => {
    expect(() => selectBackend({ CONTAINER_BACKEND: "flyio", FLY_API_TOKEN: "fo1_secret" })).toThrow(
      /^FLY_WORKSPACE_APP is required/,
    );
  });
});
