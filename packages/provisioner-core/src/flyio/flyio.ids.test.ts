/**
 * The Fly backend's id boundary: a workspace id that is not a minted id never reaches the Machines API, and every id
 * put into a path (app, machine, volume) is one encoded segment, whatever it holds.
 */
import { createIdGenerator } from "@molecule/contracts";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS } from "../../../../test-support/hostile-ids.ts";
import { ProvisionerError } from "../errors.ts";
import { FlyApi, flyPath } from "./api.ts";
import { flyVolumeName } from "./provisioner.ts";
import { type FlyHarness, startFlyHarness, TEST_APP } from "./testkit.ts";

const ids = createIdGenerator();
let h: FlyHarness;

beforeAll(async () => {
  h = await startFlyHarness();
});
afterAll(async () => {
  await h.close();
  expect(h.emulator.violations).toEqual([]);
});
beforeEach(() => h.emulator.resetCounts());

async function rejection(promise: Promise<unknown>): Promise<ProvisionerError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ProvisionerError);
  return error as ProvisionerError;
}

describe("flyio: the workspace id boundary", () => {
  it("every call with an id that is not a minted workspace id is invalid_spec, and Fly is never asked", async () => {
    const p = h.provisioner;
    for (const bad of HOSTILE_WORKSPACE_IDS) {
      const spec = h.makeSpec({ workspaceId: bad });
      const ref = { workspaceId: bad, orgId: spec.orgId, handle: null };
      const calls: [string, () => Promise<unknown>][] = [
        ["provision", () => p.provision(spec, null)],
        ["start", () => p.start(spec, null)],
        ["start recreate", () => p.start(spec, null, { recreate: true })],
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
      expect(() => flyVolumeName(bad)).toThrow(ProvisionerError);
    }
    expect(h.emulator.log).toEqual([]);
    expect(h.emulator.machines(TEST_APP)).toEqual([]);
    expect(h.emulator.volumes(TEST_APP)).toEqual([]);
  });

  it("a machine id from a handle is sent as one encoded segment; a dot segment is refused before sending", async () => {
    const spec = h.makeSpec({ workspaceId: ids.next("ws") });
    const ref = { workspaceId: spec.workspaceId, orgId: spec.orgId };
    expect(
      await h.provisioner.status({ ...ref, handle: { backend: "flyio", machineId: "../volumes?x=1" } }),
    ).toEqual({ state: "missing" });
    expect(h.emulator.log.map((entry) => `${entry.method} ${entry.path}`)).toContain(
      `GET /apps/${TEST_APP}/machines/..%2Fvolumes%3Fx%3D1`,
    );
    expect(h.emulator.log.every((entry) => entry.operationId !== "Volumes_list")).toBe(true);

    h.emulator.resetCounts();
    const error = await rejection(
      h.provisioner.stop({ ...ref, handle: { backend: "flyio", machineId: ".." } }),
    );
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect(h.emulator.log).toEqual([]);
  });
});

describe("flyPath and the request path", () => {
  it("encodes every interpolated value as one segment and refuses empty and dot segments", () => {
    expect(flyPath`/apps/${"my app"}/machines/${"a/b?c#d%"}/wait`).toBe(
      "/apps/my%20app/machines/a%2Fb%3Fc%23d%25/wait",
    );
    for (const bad of ["", ".", ".."]) {
      expect(() => flyPath`/apps/x/machines/${bad}`).toThrow(ProvisionerError);
    }
  });

  it("a path the URL parser would rewrite is refused without a request", async () => {
    const api = new FlyApi({
      apiToken: h.emulator.token,
      baseUrl: h.emulator.url,
      retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1, maxElapsedMs: 1 },
      requestTimeoutMs: 2_000,
      now: Date.now,
      sleep: async () => {},
      random: Math.random,
    });
    for (const path of [
      `/apps/${TEST_APP}/machines/../volumes`,
      `/apps/${TEST_APP}/./machines`,
      "/apps/a b",
    ]) {
      await expect(api.call({ op: "Machines_list", method: "GET", path }), path).rejects.toMatchObject({
        code: "invalid_spec",
        retryable: false,
      });
    }
    expect(h.emulator.log).toEqual([]);
  });
});
