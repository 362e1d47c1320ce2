import { randomBytes } from "node:crypto";
import { DomainError } from "@molecule/contracts";
import { describe, expect, it } from "vitest";
import { cpError } from "./controlplane/client.ts";
import { containerRuntimeStatus } from "./docker/engine.ts";
import { dockerReason, toProvisionerError } from "./docker/errors.ts";
import { ProvisionerError } from "./errors.ts";
import { flyError } from "./flyio/api.ts";
import { describeFailure, SCRUBBED, Scrubber, specScrubber } from "./scrub.ts";

const marker = () => `MARKER-${randomBytes(8).toString("hex")}`;

/** What dockerode throws for an engine answer: the status and the parsed body. */
function engineError(statusCode: number, message: string) {
  return Object.assign(new Error(`(HTTP code ${statusCode}) unexpected - ${message}`), {
    statusCode,
    json: { message },
    reason: "unexpected",
  });
}

describe("Scrubber", () => {
  it("takes a secret out as is, JSON-escaped, Go-quoted and cut at a control character", () => {
    const secret = `${marker()}\u0000tail-${randomBytes(4).toString("hex")}"\n`;
    const scrub = new Scrubber().add(secret);
    const head = secret.slice(0, secret.indexOf("\u0000"));
    const tail = secret.slice(secret.indexOf("\u0000") + 1, secret.indexOf('"'));
    const texts = [
      `raw: ${secret}`,
      `json: ${JSON.stringify({ env: [`KEY=${secret}`] })}`,
      `go: "KEY=${head}\\x00${tail}\\"\\n"`,
      `cut: KEY=${head}`,
    ];
    for (const text of texts) {
      const out = scrub.text(text);
      expect(out).toContain(SCRUBBED);
      expect(out).not.toContain(head);
      expect(out).not.toContain(tail);
    }
  });

  it("scrubs a spec's secret values and long env values, never the ids messages name on purpose", () => {
    const secret = marker();
    const scrub = specScrubber(
      {
        workspaceId: "ws_01hzzzzzzzzzzzzzzzzzzzzzzz",
        orgId: "org_01hzzzzzzzzzzzzzzzzzzzzzzz",
        deployment: "prod-eu",
        env: {
          API_KEY: secret,
          PIN: "1234",
          WORKSPACE_ID: "ws_01hzzzzzzzzzzzzzzzzzzzzzzz",
          PLATFORM_URL: "http://platform.internal:8080",
          AGENT_PORT: "8000",
        },
        secretKeys: ["API_KEY", "PIN"],
      },
      "fly-token-0123456789",
    );
    const out = scrub.text(
      `ws_01hzzzzzzzzzzzzzzzzzzzzzzz failed (400) on 8000: ${secret} 1234 http://platform.internal:8080 fly-token-0123456789`,
    );
    expect(out).toBe(
      `ws_01hzzzzzzzzzzzzzzzzzzzzzzz failed (400) on 8000: ${SCRUBBED} ${SCRUBBED} ${SCRUBBED} ${SCRUBBED}`,
    );
  });

  it("leaves a value too short to look for alone", () => {
    expect(new Scrubber().add("ab").text("a tab in a cab")).toBe("a tab in a cab");
  });

  it("rethrows a failure scrubbed, a ProvisionerError keeping its code, retryable flag and details' shape", async () => {
    const secret = marker();
    const scrub = new Scrubber().add(secret);
    const thrown = new ProvisionerError("backend_unavailable", `boom ${secret}`, true, {
      op: "x",
      nested: { text: `KEY=${secret}` },
    });
    const error = await scrub.run(() => Promise.reject(thrown)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "backend_unavailable", retryable: true, details: { op: "x" } });
    expect(JSON.stringify({ ...(error as object), message: (error as Error).message })).not.toContain(secret);
    expect((error as Error).stack).not.toContain(secret);

    const foreign = Object.assign(new TypeError(`bad ${secret}`), { code: "ERR_X", parameters: [secret] });
    const plain = await scrub.run(() => Promise.reject(foreign)).catch((e: unknown) => e);
    expect(plain).toMatchObject({ name: "TypeError", code: "ERR_X", message: `bad ${SCRUBBED}` });
    expect(JSON.stringify(plain)).not.toContain(secret);
    expect((plain as Error).stack).not.toContain(secret);
  });

  it("scrubs step details on the way to the caller's reporter", () => {
    const secret = marker();
    const seen: (string | undefined)[] = [];
    const ctx = new Scrubber()
      .add(secret)
      .context({ step: (_name: string, detail?: string) => seen.push(detail) });
    ctx?.step?.("a", `detail ${secret}`);
    ctx?.step?.("b");
    expect(seen).toEqual([`detail ${SCRUBBED}`, undefined]);
  });

  it("describes a failure for the row and the log from safe fields, never a library's error object", () => {
    const secret = marker();
    const scrub = new Scrubber().add(secret);
    const typed = describeFailure(
      new ProvisionerError("invalid_spec", `refused ${secret}`, false, { op: "create" }),
      "unexpected",
      scrub,
    );
    expect(typed).toMatchObject({ code: "invalid_spec", message: `refused ${SCRUBBED}`, retryable: false });
    expect(JSON.stringify(typed.log)).not.toContain(secret);
    const driver = Object.assign(new Error(`insert failed: ${secret}`), {
      query: "insert",
      parameters: [secret],
    });
    const internal = describeFailure(driver, "unexpected error", scrub);
    expect(internal).toMatchObject({ code: "internal", message: "unexpected error", retryable: false });
    expect(JSON.stringify(internal.log)).not.toContain(secret);
    expect(JSON.stringify(internal.log)).not.toContain("parameters");
    const domain = describeFailure(
      new DomainError("secrets_key_unavailable", `sealed with key version 1 ${secret}`, { key_version: 1 }),
      "unexpected error",
      scrub,
    );
    expect(domain).toMatchObject({
      code: "secrets_key_unavailable",
      message: `sealed with key version 1 ${SCRUBBED}`,
      retryable: false,
      log: { error: { code: "secrets_key_unavailable", details: { key_version: 1 } } },
    });
    expect(JSON.stringify(domain.log)).not.toContain(secret);
  });
});

describe("errors are built from the operation, the status and fixed words", () => {
  it("docker: a refused create says so and which kind of refusal, never the engine's text", () => {
    const secret = marker();
    const error = toProvisionerError(
      "create container",
      engineError(400, `invalid environment variable: API_KEY=${secret}`),
    );
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect(error.message).toBe(
      "docker create container failed (400): the engine refused the container configuration (invalid environment variable)",
    );
    const unknown = toProvisionerError("create container", engineError(400, `something new about ${secret}`));
    expect(unknown.message).toBe(
      "docker create container failed (400): the engine refused the container configuration",
    );
  });

  it("docker: a start the runtime refuses for an env value is not retried, and the state error is only named", () => {
    const secret = marker();
    const text = `failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: environment variable value can't contain null(\\x00): "API_KEY=${secret}\\x00x": unknown`;
    const error = toProvisionerError("start container", engineError(500, text));
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect(error.message).toBe("docker start container failed (500): invalid environment variable");
    expect(JSON.stringify(error.details)).not.toContain(secret);
    const status = containerRuntimeStatus({
      Status: "exited",
      Running: false,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: 0,
      ExitCode: 128,
      Error: text,
      StartedAt: "",
      FinishedAt: "0001-01-01T00:00:00Z",
    });
    expect(status.detail).toBe("exited with code 128 : invalid environment variable");
  });

  it("docker: a known engine answer keeps its kind (no such image), others a phrase for the status", () => {
    expect(dockerReason(engineError(404, "No such image: molecule/x:latest"), "inspect image")).toBe(
      "no such image",
    );
    expect(toProvisionerError("start container", engineError(500, "weird")).message).toBe(
      "docker start container failed (500): the engine could not start the container",
    );
    const unreachable = toProvisionerError(
      "info",
      Object.assign(new Error("connect ENOENT /var/run/docker.sock"), { code: "ENOENT" }),
    );
    expect(unreachable.message).toBe("docker engine unreachable during info: ENOENT");
  });

  it("Fly: an error body that echoes the machine config is not quoted", () => {
    const secret = marker();
    const error = flyError(
      { op: "Machines_create" },
      {
        status: 500,
        body: { error: `could not apply config {"env":{"API_KEY":"${secret}"}}`, status: "unknown" },
        requestId: "01EMUREQUEST",
      },
    );
    expect(error).toMatchObject({ code: "backend_unavailable", retryable: true });
    expect(error.message).toBe(
      "Fly Machines_create failed with HTTP 500: Fly internal error (fly-request-id 01EMUREQUEST)",
    );
    expect(JSON.stringify(error.details)).not.toContain(secret);
    // An answer quoting a config that names its image registry is not taken for an image error.
    const echoed = flyError(
      { op: "Machines_create" },
      {
        status: 400,
        body: {
          error: `invalid machine request: {"config":{"image":"registry.fly.io/x:1","env":{"K":"${secret}"}}}`,
        },
        requestId: "01EMUREQUEST",
      },
    );
    expect(echoed).toMatchObject({ code: "invalid_spec" });
    expect(echoed.message).toBe(
      "Fly Machines_create failed with HTTP 400: Fly refused the machine configuration (fly-request-id 01EMUREQUEST)",
    );
    const odd = flyError(
      { op: "Machines_create" },
      { status: 400, body: { error: "x", status: `${secret} y` }, requestId: `${secret} z` },
    );
    expect(`${odd.message} ${JSON.stringify(odd.details)}`).not.toContain(secret);
  });

  it("control plane: an envelope's code and request id are kept only when they look like one", () => {
    const secret = marker();
    const error = cpError(
      { op: "provision", method: "POST", path: "/cp/workspaces/provision" },
      {
        status: 400,
        body: {
          error: {
            code: `bad ${secret}`,
            message: "env.API_KEY: must not contain NUL\u0000more",
            requestId: `${secret} x`,
          },
        },
        requestId: "req_1",
      },
    );
    expect(error.message).toBe(
      "control plane provision (POST /cp/workspaces/provision) failed with HTTP 400: env.API_KEY: must not contain NUL (request req_1)",
    );
    expect(JSON.stringify(error.details)).not.toContain(secret);
  });
});
