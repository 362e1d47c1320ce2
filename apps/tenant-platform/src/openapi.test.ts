import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AnswerChecker,
  documentedRoutes,
  openApiProblems,
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
    const documented = documentedRoutes(document);
    expect(
      [...served].filter((route) => !documented.has(route)),
      "served but not documented",
    ).toEqual([]);
    expect(
      [...documented].filter((route) => !served.has(route)),
      "documented but not served",
    ).toEqual([]);
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
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    const csp = response.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toMatch(/script-src|https?:/);
    const page = await response.text();
    expect(page).not.toMatch(/<script|<link|src=|href="(https?:)?\/\//i);
    for (const path of Object.keys(document.paths)) expect(page).toContain(`<code>${path}</code>`);
    expect(page).toContain('id="schema-WorkspaceView"');
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
