import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AnswerChecker,
  docsPageProblems,
  openApiProblems,
  routeMismatch,
  servedRoutes,
} from "../../../test-support/openapi.ts";
import { controlPlaneOpenApi } from "./api.ts";
import { createTestControlPlane, type TestControlPlane } from "./testing.ts";

let cp: TestControlPlane;

beforeAll(async () => {
  cp = await createTestControlPlane();
});
afterAll(() => cp.close());

describe("the control plane's OpenAPI document", () => {
  const document = controlPlaneOpenApi();

  it("is valid OpenAPI 3.1", async () => {
    expect(document.openapi).toMatch(/^3\.1\./);
    expect(await openApiProblems(document)).toBe("");
  });

  it("describes every route the app serves, and none it does not", () => {
    const served = servedRoutes(cp.app);
    expect(routeMismatch(document, served)).toEqual({ servedNotDocumented: [], documentedNotServed: [] });
    expect(served.size).toBeGreaterThan(30);
  });

  it("is served at /openapi.json and rendered at /docs without a token, with nothing from another origin", async () => {
    const json = await cp.app.request("/openapi.json");
    expect(json.status).toBe(200);
    expect(await json.json()).toEqual(JSON.parse(JSON.stringify(document)));
    expect(await docsPageProblems(await cp.app.request("/docs"), document)).toEqual([]);
  });

  it("holds the test caller's answers to it", async () => {
    // The admin caller checks every answer; a wrong schema would make it throw (shown here on the checker itself).
    const listed = await cp.admin("GET", "/cp/orgs");
    expect(listed.status).toBe(200);
    const checker = new AnswerChecker(document);
    expect(() => checker.check("GET", "/cp/orgs", 200, "application/json", { orgs: [{ slug: 1 }] })).toThrow(
      /GET \/cp\/orgs -> 200 .*\/orgs\/0/s,
    );
  });
});
