import { readFileSync } from "node:fs";
import * as contracts from "@molecule/contracts";
import { type ApiRoute, buildOpenApiDocument, type OpenApiDocument } from "@molecule/service-kit/openapi";
import { canvasApi } from "./canvas/routes.ts";
import { a2aApi } from "./routes/a2a.ts";
import { adminApi } from "./routes/admin.ts";
import { eventApi } from "./routes/events.ts";
import { operationApi } from "./routes/operations.ts";
import { poolApi } from "./routes/pools.ts";
import { registryApi } from "./routes/registry.ts";
import { workspaceApi } from "./routes/workspaces.ts";

/** The routes `createApp` registers itself (the rest are described beside their route modules). */
const serviceApi: ApiRoute[] = [
  {
    method: "GET",
    path: "/health",
    summary: "Liveness",
    tag: "service",
    auth: [],
    responses: { 200: { description: "The process is serving", schema: contracts.HealthResponse } },
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

export const TENANT_API_ROUTES: readonly ApiRoute[] = [
  ...serviceApi,
  ...workspaceApi,
  ...operationApi,
  ...registryApi,
  ...a2aApi,
  ...eventApi,
  ...adminApi,
  ...poolApi,
  ...canvasApi,
];

/** The tenant platform's OpenAPI document (`GET /openapi.json`). */
export function tenantOpenApi(): OpenApiDocument {
  const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  return buildOpenApiDocument({
    title: "Molecule tenant platform",
    version,
    description:
      "One organisation's workspaces, their secrets, the agent registry, the A2A proxy and live events. " +
      "Every error is the envelope { error: { code, message, requestId } } (the A2A proxy's are JSON-RPC errors). " +
      "docs/api.md in the repository explains the auth model, errors, events and A2A.",
    security: {
      admin: "ADMIN_TOKEN: everything the operator does",
      workspace:
        "A workspace's own token (from POST /registry/register): its heartbeats, secrets, events, A2A calls",
      bootToken:
        "The one-time registration token a workspace is given at creation, spent by POST /registry/register",
      poolToken: "A warm pool member's only credential, for POST /registry/claim",
    },
    errorSchema: contracts.ErrorEnvelope,
    named: contracts,
    routes: TENANT_API_ROUTES,
  });
}
