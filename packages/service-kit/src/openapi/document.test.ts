import { compileErrors, validate } from "@readme/openapi-parser";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { type ApiDescription, buildOpenApiDocument, openApiRoutes } from "./index.ts";

const Envelope = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
const ItemId = z.string().regex(/^it_[0-9a-z]{4}$/);
const Item = z.object({ id: ItemId, size: z.number().default(1) });
const Unused = z.object({ never: z.string() });
type Tree = { name: string; children: Tree[] };
const Tree: z.ZodType<Tree> = z.object({
  name: z.string(),
  get children() {
    return z.array(Tree);
  },
});

const api = (routes: ApiDescription["routes"]): ApiDescription => ({
  title: "Items",
  version: "1.0.0",
  description: "test <api>",
  security: { admin: "the admin token", other: "unused" },
  errorSchema: Envelope,
  named: { Envelope, ItemId, Item, Unused, Tree, notASchema: 42 },
  routes,
});

const routes: ApiDescription["routes"] = [
  {
    method: "PUT",
    path: "/items/:id",
    summary: "Put an item",
    tag: "items",
    auth: ["admin"],
    params: z.object({ id: ItemId }),
    query: z.object({ dry: z.enum(["yes", "no"]).optional() }),
    body: Item,
    responses: { 200: { description: "Stored", schema: Item } },
    errors: [404],
  },
  {
    method: "GET",
    path: "/tree",
    summary: "The tree",
    tag: "items",
    auth: [],
    responses: {
      200: { description: "It", schema: z.object({ root: Tree }) },
      204: { description: "None", contentType: "text/plain", alsoAs: ["text/event-stream"] },
    },
  },
];

describe("buildOpenApiDocument", () => {
  const document = buildOpenApiDocument(api(routes));

  it("is valid OpenAPI 3.1", async () => {
    const result = await validate(structuredClone(document) as never);
    expect(result.valid ? "" : compileErrors(result)).toBe("");
    expect(document.openapi).toBe("3.1.1");
  });

  it("writes each named schema once, as a component, and only those something uses", () => {
    const put = document.paths["/items/{id}"].put;
    expect(put.responses["200"].content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/Item",
    });
    expect(put.parameters).toEqual([
      { name: "id", in: "path", required: true, schema: { $ref: "#/components/schemas/ItemId" } },
      { name: "dry", in: "query", required: false, schema: { type: "string", enum: ["yes", "no"] } },
    ]);
    expect(document.components.schemas.Item.properties.id).toEqual({ $ref: "#/components/schemas/ItemId" });
    expect(Object.keys(document.components.schemas).sort()).toEqual(
      expect.arrayContaining(["Envelope", "Item", "ItemId", "ItemInput", "Tree"]),
    );
    expect(document.components.schemas.Unused).toBeUndefined();
    expect(Object.keys(document.components.securitySchemes)).toEqual(["admin"]);
  });

  it("publishes a request's schema apart when its input differs from the answer's (a default)", () => {
    const put = document.paths["/items/{id}"].put;
    expect(put.requestBody.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/ItemInput",
    });
    expect(document.components.schemas.Item.required).toEqual(["id", "size"]);
    expect(document.components.schemas.ItemInput.required).toEqual(["id"]);
  });

  it("documents errors in the service's schema, 401 for routes with auth, and a default", () => {
    const put = document.paths["/items/{id}"].put;
    expect(Object.keys(put.responses)).toEqual(["200", "401", "404", "default"]);
    expect(put.responses["404"].content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/Envelope",
    });
    expect(put.security).toEqual([{ admin: [] }]);
    const tree = document.paths["/tree"].get;
    expect(tree.security).toEqual([]);
    expect(Object.keys(tree.responses)).toEqual(["200", "204", "default"]);
    expect(tree.responses["204"].content).toEqual({
      "text/plain": { schema: { type: "string" } },
      "text/event-stream": { schema: { type: "string" } },
    });
  });

  it("refuses a route described twice or naming an unknown auth", () => {
    expect(() => buildOpenApiDocument(api([...routes, routes[0] as (typeof routes)[0]]))).toThrow(/twice/);
    expect(() =>
      buildOpenApiDocument(api([{ ...(routes[1] as (typeof routes)[1]), auth: ["nobody"] }])),
    ).toThrow(/unknown auth nobody/);
  });
});

describe("openApiRoutes", () => {
  it("serves the document and its page, built once, the page with nothing from elsewhere", async () => {
    let builds = 0;
    const app = new Hono().route(
      "/",
      openApiRoutes(() => {
        builds += 1;
        return buildOpenApiDocument(api(routes));
      }),
    );
    const json = await app.request("/openapi.json");
    expect(json.headers.get("content-type")).toBe("application/json");
    expect(((await json.json()) as { paths: Record<string, unknown> }).paths["/tree"]).toBeDefined();
    const page = await app.request("/docs");
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toMatch(/^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/=]+'; /);
    const html = await page.text();
    expect(html).toContain("test &lt;api&gt;");
    expect(html).toContain('<a href="#schema-ItemId">ItemId</a>');
    expect(html).not.toMatch(/<script|src=|https?:\/\/(?!json-schema\.org)/);
    expect(builds).toBe(1);
  });
});
