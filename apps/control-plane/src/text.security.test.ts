/**
 * Text the database cannot store (NUL, unpaired surrogates) and control characters in one-line fields are refused
 * with a 400 and the error envelope where they enter, before any query: org names, slugs in paths, delete
 * confirmations and boot-event details. Nothing changes and nothing is logged as an unhandled error.
 */
import { Writable } from "node:stream";
import { ErrorEnvelope } from "@molecule/contracts";
import { logSerializers } from "@molecule/service-kit/log";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestControlPlane, type Reply, type TenantIdentity, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;
let org: TenantIdentity;
const logs: string[] = [];

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  cp = await createTestControlPlane({ logger: pino({ level: "debug", serializers: logSerializers }, sink) });
  org = await cp.createOrg("textorg");
  await cp.runner.drain();
});
afterAll(() => cp.close());

function expectBadRequest(reply: Reply) {
  expect(reply.status).toBe(400);
  expect(ErrorEnvelope.parse(reply.body).error.code).toBe("bad_request");
}

describe("hostile text on the control plane", () => {
  it("an org name with NUL, a control character or a lone surrogate is a 400 and creates nothing", async () => {
    const before = await cp.snapshot();
    for (const name of ["Ac\u0000me", "Ac\u001bme", "Ac\nme", "Ac\ud800me"]) {
      expectBadRequest(await cp.admin("POST", "/cp/orgs", { slug: "acme", name }));
    }
    expect(await cp.snapshot()).toBe(before);
  });

  it("a slug in the path that cannot be a slug is a 400 before any query (GET and DELETE)", async () => {
    const before = await cp.snapshot();
    for (const slug of ["text%00org", "textorg%00", "%00", "TEXTORG", "a", "text%0Aorg", "..%2Fetc"]) {
      const shown = await cp.admin("GET", `/cp/orgs/${slug}`);
      expectBadRequest(shown);
      expect(shown.body.error.message).toMatch(/^invalid org slug: /);
      expectBadRequest(await cp.admin("DELETE", `/cp/orgs/${slug}`, { confirm: "textorg" }));
    }
    expectBadRequest(await cp.admin("DELETE", "/cp/orgs/textorg", { confirm: "text\u0000org" }));
    expect(await cp.snapshot()).toBe(before);
    expect((await cp.admin("GET", "/cp/orgs/textorg")).status).toBe(200);
  });

  it("a boot-event detail with NUL or terminal escapes is a 400; line breaks are kept", async () => {
    const before = await cp.snapshot({ exceptNonces: true });
    for (const detail of ["disk\u0000full", "\u001b[2Jcleared", "a\ud800"]) {
      expectBadRequest(
        await cp.tenant(org, "POST", "/cp/tenants/boot-event", { body: { stage: "failed", detail } }),
      );
    }
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
    const multiLine = await cp.tenant(org, "POST", "/cp/tenants/boot-event", {
      body: { stage: "failed", detail: "migrations failed:\n\tdisk full" },
    });
    expect(multiLine.status).toBe(204);
    const shown = await cp.admin("GET", "/cp/orgs/textorg");
    expect(shown.body.provision_status.last_error).toBe("migrations failed:\n\tdisk full");
  });

  it("workspace metadata with NUL anywhere is a 400 and queues nothing", async () => {
    const before = await cp.snapshot({ exceptNonces: true });
    const spec = {
      workspace_id: "ws_01abcdefghjkmnpqrstvwxyz00",
      runtime: "echo",
      tier: 2,
      env: {},
      secret_keys: [],
      metadata: { labels: [{ "team\u0000": "blue" }] },
    };
    expectBadRequest(await cp.tenant(org, "POST", "/cp/workspaces/provision", { body: spec }));
    expect(await cp.snapshot({ exceptNonces: true })).toBe(before);
  });

  it("none of it was logged as an unhandled error", () => {
    expect(logs.join("")).not.toContain("unhandled error");
    expect(logs.some((line) => line.includes('"status":400'))).toBe(true);
  });
});
