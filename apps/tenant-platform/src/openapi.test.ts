import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AnswerChecker,
  docsPageProblems,
  openApiProblems,
  routeMismatch,
  servedRoutes,
} from "../../../test-support/openapi.ts";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";
import { tenantOpenApi } from "./api.ts";

let platform: TestPlatform;
let served: Set<string>;

beforeAll(async () => {
  platform = await createTestPlatform(createFakeProvisioner());
  // The raw routes served in front of the Hono app count as routes too.
  served = servedRoutes(platform.app, platform.rawRoutes);
});
afterAll(() => platform.close());

describe("the tenant platform's OpenAPI document", () => {
  const document = tenantOpenApi();

  it("is valid OpenAPI 3.1", async () => {
    expect(document.openapi).toMatch(/^3\.1\./);
    expect(await openApiProblems(document)).toBe("");
  });

  it("describes every route the app serves, and none it does not", () => {
    expect(routeMismatch(document, served)).toEqual({ servedNotDocumented: [], documentedNotServed: [] });
    // The raw front-door routes are among them.
    expect(served).toContain("POST /workspaces/:id/a2a");
    expect(served).toContain("POST /registry/heartbeat");
  });

  it("is served at /openapi.json without a token", async () => {
    const response = await platform.call("GET", "/openapi.json", { token: null });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(response.body).toEqual(JSON.parse(JSON.stringify(document)));
  });

  it("is rendered at /docs without a token, with nothing from another origin", async () => {
    const response = await platform.app.request("/docs");
    expect(await docsPageProblems(response.clone(), document)).toEqual([]);
    expect(await response.text()).toContain('id="schema-WorkspaceView"');
    // The check itself: a page that loads a script under a lax CSP and omits a path is refused on each count.
    const bad = new Response('<html><script src="https://cdn.example/x.js"></script></html>', {
      headers: { "content-type": "text/html", "content-security-policy": "script-src https:" },
    });
    const problems = await docsPageProblems(bad, { paths: { "/health": {} } });
    expect(problems).toEqual([
      "CSP without default-src 'none': script-src https:",
      "CSP allows scripts or another origin: script-src https:",
      "page loads something: <script",
      "page does not name /health",
    ]);
  });

  it("holds answers to it: a wrong one is named with its route and status", () => {
    const checker = new AnswerChecker(document);
    const id = "ws_0123456789abcdefghjkmnpqrs";
    expect(() => checker.check("GET", `/workspaces/${id}`, 200, "application/json", { id })).toThrow(
      /GET \/workspaces\/ws_\w+ -> 200 .*required property/s,
    );
    // An error answer is held to the envelope, a 2xx the document does not list fails.
    expect(() =>
      checker.check("GET", `/workspaces/${id}`, 404, "application/json", { error: "x" }),
    ).toThrow();
    expect(() => checker.check("GET", "/health", 201, "application/json", { ok: true })).toThrow(
      /response default/,
    );
    checker.check("GET", "/health?x=1", 200, "application/json; charset=UTF-8", { ok: true });
    checker.check("GET", "/nowhere", 404, "application/json", {
      error: { code: "not_found", message: "no route", requestId: "req_1" },
    });
  });
});
