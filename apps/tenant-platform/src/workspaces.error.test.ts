import { RESERVED_ENV_KEYS } from "@molecule/contracts";
import { ProvisionerError } from "@molecule/provisioner-core";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { retryDelayMs } from "@molecule/service-kit/operations";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform, type TestResponse } from "../../../test-support/platform.ts";

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner({ unavailableRuntimes: ["doesnotexist"] });
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

async function rowCounts() {
  const count = async (table: string) => {
    const list = await platform.call("GET", "/workspaces");
    return table === "workspaces" ? list.body.workspaces.length : 0;
  };
  return { workspaces: await count("workspaces"), backend: fake.workspaces().length };
}

function expectEnvelope(response: TestResponse, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.body.error.code).toBe(code);
  expect(typeof response.body.error.message).toBe("string");
  expect(response.body.error.requestId).toMatch(/^req_/);
  expect(response.headers.get("x-request-id")).toBe(response.body.error.requestId);
  expect(JSON.stringify(response.body)).not.toMatch(/\bat .+\.ts:\d+/); // no stack
}

describe("bad input changes nothing and answers 400 with the envelope", () => {
  const cases: [string, unknown][] = [
    ["missing name", { runtime: "echo" }],
    ["wrong type for name", { name: 42, runtime: "echo" }],
    ["unknown field", { name: "a", runtime: "echo", privileged: true }],
    ["tier below range", { name: "a", runtime: "echo", tier: 1 }],
    ["tier above range", { name: "a", runtime: "echo", tier: 5 }],
    ["tier as a string", { name: "a", runtime: "echo", tier: "2" }],
    ["runtime not allowed", { name: "a", runtime: "python" }],
    ["runtime with a path", { name: "a", runtime: "../../etc" }],
    ["secrets not a map of strings", { name: "a", runtime: "echo", secrets: { A: 1 } }],
    ["secret with a bad name", { name: "a", runtime: "echo", secrets: { "A-B": "x" } }],
    ["reserved secret name", { name: "a", runtime: "echo", secrets: { WORKSPACE_BOOT_TOKEN: "x" } }],
    ["body is an array", [1, 2]],
    ["body is not JSON", "{nope"],
  ];
  for (const [label, body] of cases) {
    it(label, async () => {
      const before = await rowCounts();
      const response = await platform.call("POST", "/workspaces", { body });
      expectEnvelope(response, 400, "bad_request");
      expect(await rowCounts()).toEqual(before);
    });
  }

  it("names the allowed runtimes when the runtime is refused", async () => {
    const response = await platform.call("POST", "/workspaces", { body: { name: "a", runtime: "python" } });
    expect(response.body.error.message).toContain("echo");
  });

  it("refuses an oversized body with 413", async () => {
    const before = await rowCounts();
    const response = await platform.call("POST", "/workspaces", {
      body: {
        name: "a",
        runtime: "echo",
        metadata: { big: "x".repeat(1000) },
        secrets: { A: "y".repeat(70_000) },
      },
    });
    expectEnvelope(response, 413, "payload_too_large");
    expect(await rowCounts()).toEqual(before);
  });

  it("refuses a non-JSON content type with 415", async () => {
    const response = await platform.call("POST", "/workspaces", {
      body: "name=a",
      headers: { "content-type": "text/plain" },
    });
    expectEnvelope(response, 415, "unsupported_media_type");
  });

  it("bad ids are 400, unknown ids 404, unknown routes 404", async () => {
    expectEnvelope(await platform.call("GET", "/workspaces/not-an-id"), 400, "bad_request");
    expectEnvelope(await platform.call("POST", "/workspaces/ws_x'; drop/stop"), 400, "bad_request");
    expectEnvelope(await platform.call("GET", "/workspaces/ws_0000000000aaaaaaaaaaaaaaaa"), 404, "not_found");
    expectEnvelope(
      await platform.call("DELETE", "/workspaces/ws_0000000000aaaaaaaaaaaaaaaa"),
      404,
      "not_found",
    );
    expectEnvelope(await platform.call("GET", "/operations/op_0000000000aaaaaaaaaaaaaaaa"), 404, "not_found");
    expectEnvelope(
      await platform.call("GET", "/operations/ws_0000000000aaaaaaaaaaaaaaaa"),
      400,
      "bad_request",
    );
    expectEnvelope(await platform.call("GET", "/nowhere"), 404, "not_found");
  });

  it("a bad secret name in the path is 400", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "s", runtime: "echo" } });
    const response = await platform.call("PUT", `/workspaces/${created.body.workspace.id}/secrets/1BAD`, {
      body: { value: "x" },
    });
    expectEnvelope(response, 400, "bad_request");
    await platform.runner.drain();
  });

  it("a reserved name is refused by PUT and DELETE as by create, and the secrets stay as they were", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "r", runtime: "echo", secrets: { API_KEY: "k" } },
    });
    const id = created.body.workspace.id;
    await platform.runner.drain();
    for (const name of RESERVED_ENV_KEYS) {
      const put = await platform.call("PUT", `/workspaces/${id}/secrets/${name}`, { body: { value: "x" } });
      expectEnvelope(put, 400, "bad_request");
      expect(put.body.error.message).toContain("reserved");
      expectEnvelope(await platform.call("DELETE", `/workspaces/${id}/secrets/${name}`), 400, "bad_request");
      const create = await platform.call("POST", "/workspaces", {
        body: { name: "r2", runtime: "echo", secrets: { [name]: "x" } },
      });
      expectEnvelope(create, 400, "bad_request");
      expect(create.body.error.message).toContain("reserved");
    }
    const listed = await platform.call("GET", `/workspaces/${id}/secrets`);
    expect(listed.body.secrets.map((secret: { key: string }) => secret.key)).toEqual(["API_KEY"]);
    expect((await platform.call("GET", `/workspaces/${id}`)).body.needsRestart).toBe(false);
  });
});

describe("illegal transitions and conflicts are 409", () => {
  it("start of a running workspace, stop of a stopped one, anything on a removed one", async () => {
    const created = await platform.call("POST", "/workspaces", { body: { name: "t", runtime: "echo" } });
    const id = created.body.workspace.id;
    // A lifecycle request while the provision is still pending conflicts with it.
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/stop`), 409, "invalid_transition");
    await platform.runner.drain();
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/start`), 409, "invalid_transition");
    await platform.call("POST", `/workspaces/${id}/stop`);
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/stop`), 409, "invalid_transition");
    await platform.runner.drain();
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/stop`), 409, "invalid_transition");
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/restart`), 409, "invalid_transition");
    await platform.call("DELETE", `/workspaces/${id}`);
    await platform.runner.drain();
    expectEnvelope(await platform.call("POST", `/workspaces/${id}/start`), 409, "invalid_transition");
    expectEnvelope(
      await platform.call("PUT", `/workspaces/${id}/secrets/A`, { body: { value: "x" } }),
      409,
      "invalid_transition",
    );
  });
});

describe("backend failures end operations clearly", () => {
  it("a missing image fails the operation with the reason and marks the workspace failed", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "img", runtime: "doesnotexist" },
    });
    expect(created.status).toBe(202);
    await platform.runner.drain();
    const operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.status).toBe("failed");
    expect(operation.body.error.code).toBe("image_unavailable");
    expect(operation.body.error.message).toContain("doesnotexist");
    const workspace = await platform.call("GET", `/workspaces/${created.body.workspace.id}`);
    expect(workspace.body.status).toBe("failed");
    expect(workspace.body.statusReason).toContain("doesnotexist");
    // A failed workspace can still be deleted.
    await platform.call("DELETE", `/workspaces/${created.body.workspace.id}`);
    await platform.runner.drain();
    expect((await platform.call("GET", `/workspaces/${created.body.workspace.id}`)).body.status).toBe(
      "removed",
    );
  });

  it("a retryable failure is retried and the operation still succeeds", async () => {
    fake.failNext("provision", new ProvisionerError("backend_unavailable", "engine busy", true), 1);
    const created = await platform.call("POST", "/workspaces", { body: { name: "retry", runtime: "echo" } });
    await platform.runner.drain();
    let operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.status).toBe("pending");
    expect(operation.body.error.message).toBe("engine busy");
    // The retry waits out its backoff; move the clock past it.
    expect(await platform.runner.drain()).toBe(0);
    platform.clock.advance(retryDelayMs(1));
    await platform.runner.drain();
    operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.status).toBe("succeeded");
    expect(operation.body.attempts).toBe(2);
    expect(fake.workspaces().filter((w) => w.workspaceId === created.body.workspace.id)).toHaveLength(1);
  });

  it("an unexpected error is answered without its text", async () => {
    fake.failNext("provision", new Error("secret internal detail"), 1);
    const created = await platform.call("POST", "/workspaces", { body: { name: "boom", runtime: "echo" } });
    await platform.runner.drain();
    const operation = await platform.call("GET", `/operations/${created.body.operation.id}`);
    expect(operation.body.status).toBe("failed");
    expect(JSON.stringify(operation.body)).not.toContain("secret internal detail");
  });
});
