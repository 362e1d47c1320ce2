/**
 * The Docker client never follows a redirect, and no docker backend call with a workspace id that is not a minted id
 * reaches the engine. Both against a stand-in engine on loopback (the real one redirects only malformed paths, which
 * the backends no longer build).
 */
import { createIdGenerator } from "@molecule/contracts";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS } from "../../../../test-support/hostile-ids.ts";
import { ProvisionerError } from "../errors.ts";
import { resourceName } from "../naming.ts";
import type { Provisioner, WorkspaceSpec } from "../provisioner.ts";
import { createDockerClient } from "./client.ts";
import { inspectContainer } from "./engine.ts";
import { assignedAgentUrl, createDockerProvisioner } from "./provisioner.ts";
import { type FakeEngine, startFakeEngine } from "./test-support.ts";

const ids = createIdGenerator();
let engine: FakeEngine;
const uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

beforeAll(async () => {
  engine = await startFakeEngine();
  process.on("uncaughtException", onUncaught);
});
afterAll(async () => {
  process.off("uncaughtException", onUncaught);
  await engine.close();
});
beforeEach(() => {
  engine.requests.length = 0;
});

const client = () => createDockerClient({ host: "127.0.0.1", port: engine.port, protocol: "http" });

function backend(): Provisioner {
  return createDockerProvisioner({
    docker: client(),
    deployment: "test-redirects",
    imagePrefix: "molecule/workspace-",
    imageTag: "latest",
    network: "molecule",
  });
}

function spec(workspaceId: string): WorkspaceSpec {
  return {
    workspaceId,
    orgId: ids.next("org"),
    deployment: "test-redirects",
    runtime: "echo",
    tier: 2,
    env: {},
    secretKeys: [],
    metadata: {},
  };
}

async function rejection(promise: Promise<unknown>): Promise<ProvisionerError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ProvisionerError);
  return error as ProvisionerError;
}

describe("docker client: redirects", () => {
  const locations = () => [
    ["to an unresolvable host", "http://unresolvable.invalid/containers/x/json"],
    ["back to the engine", `${engine.url}/followed`],
    ["to a relative path", "/followed-relative"],
    ["to an unknown protocol", "ftp://unresolvable.invalid/x"],
    ["to nothing parseable", "http://["],
  ];

  it("a 3xx is an ordinary answer: the call rejects with its status, nothing else is requested, nothing is thrown", async () => {
    for (const [what, location] of locations()) {
      engine.location = location as string;
      engine.requests.length = 0;
      const docker = client();
      const raw = await docker
        .getContainer("ws-x")
        .inspect()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(raw, what).toMatchObject({ statusCode: 301 });

      const mapped = await rejection(inspectContainer(docker, "ws-x"));
      expect(mapped, what).toMatchObject({ code: "backend_error", retryable: false });
      expect(mapped.message).toContain("301");

      // The same client still works, and this answer arrives after anything a followed redirect would have sent.
      expect(String(await docker.ping())).toBe("OK");
      expect(engine.requests, what).toEqual([
        "GET /containers/ws-x/json",
        "GET /containers/ws-x/json",
        "GET /_ping",
      ]);
    }
    expect(uncaught).toEqual([]);
  });

  it("a backend whose engine redirects fails its calls with a ProvisionerError; status is unknown", async () => {
    engine.location = "http://unresolvable.invalid/";
    const p = backend();
    const s = spec(ids.next("ws"));
    expect(await rejection(p.provision(s, null))).toMatchObject({ code: "backend_error", retryable: false });
    expect(await rejection(p.destroy({ ...s, handle: null }))).toMatchObject({ code: "backend_error" });
    expect((await p.status({ ...s, handle: null })).state).toBe("unknown");
    expect(engine.requests.every((request) => !request.includes("followed"))).toBe(true);
    expect(uncaught).toEqual([]);
  });
});

describe("docker backend: the workspace id boundary", () => {
  it("every call with an id that is not a minted workspace id is invalid_spec, and the engine is never asked", async () => {
    const p = backend();
    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const s = spec(bad);
      const ref = { workspaceId: bad, orgId: s.orgId, handle: null };
      const calls: [string, () => Promise<unknown>][] = [
        ["provision", () => p.provision(s, null)],
        ["start", () => p.start(s, null)],
        ["start recreate", () => p.start(s, null, { recreate: true })],
        ["stop", () => p.stop(ref)],
        ["suspend", () => p.suspend(ref)],
        ["destroy", () => p.destroy(ref)],
        ["status", () => p.status(ref)],
      ];
      for (const [name, call] of calls) {
        const error = await rejection(call());
        expect(error, `${name} ${JSON.stringify(bad)}`).toMatchObject({
          code: "invalid_spec",
          retryable: false,
        });
        if (bad.length > 3) expect(error.message).not.toContain(bad);
      }
      expect(() => resourceName(bad)).toThrow(ProvisionerError);
      expect(() => assignedAgentUrl("molecule", bad, {})).toThrow(ProvisionerError);
    }
    expect(engine.requests).toEqual([]);
  });

  it("a minted id names its resources ws-<id>", () => {
    const id = ids.next("ws");
    expect(resourceName(id)).toBe(`ws-${id.slice(3)}`);
    expect(assignedAgentUrl("molecule", id, {})).toBe(`http://ws-${id.slice(3)}:8000`);
  });
});
