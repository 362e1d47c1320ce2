import { HealthResponse } from "@molecule/contracts";
import { Hono } from "hono";
import type { ServiceEnv } from "../http/env.ts";
import type { ApiRoute, OpenApiDocument } from "./document.ts";
import { DOCS_CONTENT_SECURITY_POLICY, renderDocsPage } from "./page.ts";

export {
  type ApiDescription,
  type ApiResponse,
  type ApiRoute,
  buildOpenApiDocument,
  type HttpMethod,
  type OpenApiDocument,
  openApiPath,
} from "./document.ts";
export { DOCS_CONTENT_SECURITY_POLICY, renderDocsPage } from "./page.ts";

/**
 * `GET /openapi.json` and `GET /docs`, public: they describe the API and hold no secret. The document is built on the
 * first request (converting every schema takes a while, and most processes are never asked) and kept.
 */
export function openApiRoutes<E extends ServiceEnv>(build: () => OpenApiDocument) {
  let built: { json: string; page: string } | undefined;
  const get = () => {
    if (!built) {
      const document = build();
      built = { json: JSON.stringify(document), page: renderDocsPage(document) };
    }
    return built;
  };
  const app = new Hono<E>();
  app.get("/openapi.json", (c) => {
    c.header("cache-control", "no-cache");
    return c.body(get().json, 200, { "content-type": "application/json" });
  });
  app.get("/docs", (c) => {
    c.header("content-security-policy", DOCS_CONTENT_SECURITY_POLICY);
    c.header("x-content-type-options", "nosniff");
    c.header("referrer-policy", "no-referrer");
    c.header("cache-control", "no-cache");
    return c.html(get().page);
  });
  return app;
}

/** The routes every service's `createApp` registers itself: health, metrics and this document in both forms. */
export const SERVICE_API_ROUTES: readonly ApiRoute[] = [
  {
    method: "GET",
    path: "/health",
    summary: "Liveness",
    tag: "service",
    auth: [],
    responses: { 200: { description: "The process is serving", schema: HealthResponse } },
  },
  {
    method: "GET",
    path: "/metrics",
    summary: "Prometheus metrics",
    description: "Also served without a token on METRICS_PORT when that is set.",
    tag: "service",
    auth: ["admin"],
    responses: { 200: { description: "Prometheus text exposition", contentType: "text/plain" } },
    errors: [403],
  },
  {
    method: "GET",
    path: "/openapi.json",
    summary: "This document",
    tag: "service",
    auth: [],
    responses: { 200: { description: "OpenAPI 3.1, as JSON", contentType: "application/json" } },
  },
  {
    method: "GET",
    path: "/docs",
    summary: "This document as a page",
    tag: "service",
    auth: [],
    responses: {
      200: { description: "HTML, with nothing loaded from another origin", contentType: "text/html" },
    },
  },
];
