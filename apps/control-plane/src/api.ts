import { readFileSync } from "node:fs";
import * as contracts from "@molecule/contracts";
import { type ApiRoute, buildOpenApiDocument, type OpenApiDocument } from "@molecule/service-kit/openapi";
import { adminApi } from "./routes/admin.ts";
import { orgApi } from "./routes/orgs.ts";
import { rolloutApi } from "./routes/rollouts.ts";
import { tenantApi } from "./routes/tenant.ts";

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

export const CONTROL_PLANE_API_ROUTES: readonly ApiRoute[] = [
  ...serviceApi,
  ...orgApi,
  ...adminApi,
  ...rolloutApi,
  ...tenantApi,
];

/** The control plane's OpenAPI document (`GET /openapi.json`). */
export function controlPlaneOpenApi(): OpenApiDocument {
  const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  return buildOpenApiDocument({
    title: "Molecule control plane",
    version,
    description:
      "Orgs and their tenants, tenant lifecycle, workspace rollouts and AMI pins for the operator; workspace " +
      "provisioning for tenants. Every error is the envelope { error: { code, message, requestId } }. " +
      "docs/api.md in the repository explains the auth model, request signing and errors.",
    security: {
      admin: "ADMIN_TOKEN: the operator",
      tenant:
        "A tenant's own credential, with the request signed: x-molecule-timestamp, x-molecule-nonce and " +
        "x-molecule-signature (HMAC-SHA256 with the org's key derived from PROVISION_SHARED_SECRET over method, path, " +
        "timestamp, nonce and body hash; see docs/api.md)",
    },
    errorSchema: contracts.ErrorEnvelope,
    named: contracts,
    routes: CONTROL_PLANE_API_ROUTES,
  });
}
