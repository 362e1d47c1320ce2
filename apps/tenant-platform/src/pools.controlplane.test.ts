import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, errorOf, type TestPlatform } from "../../../test-support/platform.ts";

let platform: TestPlatform;

beforeAll(async () => {
  // Named as the controlplane backend is: the guard reads the backend's name.
  platform = await createTestPlatform(createFakeProvisioner({ name: "controlplane" }));
});
afterAll(() => platform.close());

describe("warm pools on the controlplane backend (SaaS tenants)", () => {
  it("are refused with a 409 that says so, and nothing is stored; size 0 is still accepted", async () => {
    const refused = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 3 } });
    expect(refused.status).toBe(409);
    expect(errorOf(refused)).toMatchObject({
      code: "conflict",
      message: expect.stringMatching(/controlplane/),
    });
    expect((await platform.call("GET", "/pools")).body).toEqual({ pools: [] });
    const drained = await platform.call("PUT", "/pools", { body: { runtime: "echo", tier: 2, size: 0 } });
    expect(drained.status).toBe(200);
    expect(drained.body).toMatchObject({ size: 0, ready: 0, starting: 0 });
  });
});
