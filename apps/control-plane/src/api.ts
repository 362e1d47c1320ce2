import { readFileSync } from "node:fs";
import * as contracts from "@molecule/contracts";
import {
  type ApiRoute,
  buildOpenApiDocument,
  type OpenApiDocument,
  SERVICE_API_ROUTES,
} from "@molecule/service-kit/openapi";
import { adminApi } from "./routes/admin.ts";
import { orgApi } from "./routes/orgs.ts";
import { rolloutApi } from "./routes/rollouts.ts";
import { tenantApi } from "./routes/tenant.ts";

export const CONTROL_PLANE_API_ROUTES: readonly ApiRoute[] = [
  ...SERVICE_API_ROUTES,
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
