import { readFileSync } from "node:fs";
import * as contracts from "@molecule/contracts";
import {
  type ApiRoute,
  buildOpenApiDocument,
  type OpenApiDocument,
  SERVICE_API_ROUTES,
} from "@molecule/service-kit/openapi";
import { canvasApi } from "./canvas/routes.ts";
import { a2aApi } from "./routes/a2a.ts";
import { adminApi } from "./routes/admin.ts";
import { eventApi } from "./routes/events.ts";
import { operationApi } from "./routes/operations.ts";
import { poolApi } from "./routes/pools.ts";
import { registryApi } from "./routes/registry.ts";
import { workspaceApi } from "./routes/workspaces.ts";

export const TENANT_API_ROUTES: readonly ApiRoute[] = [
  ...SERVICE_API_ROUTES,
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
