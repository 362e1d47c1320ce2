import {
  BackupReportBody,
  BootEventBody,
  CpAccepted,
  CpOperationView,
  CpProvisionBody,
  CpRuntimeStatus,
  CpStartBody,
  CpWorkspaceList,
  DomainError,
  OperationId,
  TenantRuntimeConfig,
  WorkspaceId,
} from "@molecule/contracts";
import { parseWith } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { idempotencyKey, parseJsonBytes } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import { recordBackupReport } from "../services/backups.ts";
import type { ControlPlaneDeps } from "../services/deps.ts";
import type { OrgService } from "../services/orgs.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

/**
 * The `:id` of a path, refused (400, before any lookup) unless it is an id of its kind: nothing a tenant sends reaches
 * the database or a backend as a workspace or operation id without matching the minted form.
 */
const workspaceIdParam = (c: Context) =>
  parseWith(WorkspaceId, c.req.param("id"), "workspace id in the path");
const operationIdParam = (c: Context) =>
  parseWith(OperationId, c.req.param("id"), "operation id in the path");

const PLAIN_KINDS = ["stop", "suspend"] as const;

/** Routes a tenant calls with its signed credential (mounted behind requireTenant). */
export function tenantRoutes(deps: ControlPlaneDeps, workspaces: WorkspaceService, orgs: OrgService) {
  const app = new Hono<AppEnv>();

  app.post("/workspaces/provision", async (c) => {
    const body = c.get("rawBody");
    const spec = parseJsonBytes(body, CpProvisionBody);
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "provision",
      workspaceId: spec.workspace_id,
      key,
      body,
      input: { spec },
    });
    return c.json({ operation }, 202);
  });

  app.post("/workspaces/:id/start", async (c) => {
    const workspaceId = workspaceIdParam(c);
    const body = c.get("rawBody");
    const parsed = parseJsonBytes(body, CpStartBody);
    if (parsed.spec.workspace_id !== workspaceId) {
      throw new DomainError("bad_request", "spec.workspace_id must match the workspace id in the path");
    }
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "start",
      workspaceId,
      key,
      body,
      input: { spec: parsed.spec, recreate: parsed.recreate },
    });
    return c.json({ operation }, 202);
  });

  for (const kind of PLAIN_KINDS) {
    app.post(`/workspaces/:id/${kind}`, async (c) => {
      const key = idempotencyKey(c, true) as string;
      const operation = await workspaces.request(c.get("tenant"), {
        kind,
        workspaceId: workspaceIdParam(c),
        key,
        body: c.get("rawBody"),
      });
      return c.json({ operation }, 202);
    });
  }

  app.delete("/workspaces/:id", async (c) => {
    const key = idempotencyKey(c, true) as string;
    const operation = await workspaces.request(c.get("tenant"), {
      kind: "destroy",
      workspaceId: workspaceIdParam(c),
      key,
      body: c.get("rawBody"),
    });
    return c.json({ operation }, 202);
  });

  app.get("/workspaces/:id/status", async (c) =>
    c.json(await workspaces.status(c.get("tenant"), workspaceIdParam(c))),
  );

  app.get("/workspaces", async (c) => c.json({ workspaces: await workspaces.list(c.get("tenant")) }));

  app.get("/operations/:id", async (c) =>
    c.json(await workspaces.operation(c.get("tenant"), operationIdParam(c))),
  );

  app.get("/tenants/config", async (c) => {
    const tenant = c.get("tenant");
    return c.json(await orgs.runtimeConfig(tenant.orgId, tenant.slug));
  });

  app.post("/tenants/boot-event", async (c) => {
    const event = parseJsonBytes(c.get("rawBody"), BootEventBody);
    await orgs.recordBootEvent(c.get("tenant").orgId, event);
    return c.body(null, 204);
  });

  /** A dump the tenant made (or failed to make): recorded for `GET /cp/admin/backups`. */
  app.post("/tenants/backup-report", async (c) => {
    const report = parseJsonBytes(c.get("rawBody"), BackupReportBody);
    await recordBackupReport(deps, c.get("tenant"), report);
    return c.body(null, 204);
  });

  return app;
}

const WorkspacePath = z.object({ id: WorkspaceId });
const Idempotent = z.object({
  "idempotency-key": z
    .string()
    .min(1)
    .max(200)
    .describe("Required: a retry with the same key answers the same operation"),
});
const accepted = { 202: { description: "The operation is queued", schema: CpAccepted } };
const recorded = { 204: { description: "Recorded", contentType: "text/plain" } };

export const tenantApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/cp/workspaces/provision",
    summary: "Provision a workspace",
    tag: "tenant",
    auth: ["tenant"],
    headers: Idempotent,
    body: CpProvisionBody,
    responses: accepted,
    errors: [400, 403, 409, 413, 415],
  },
  {
    method: "POST",
    path: "/cp/workspaces/:id/start",
    summary: "Start a workspace",
    tag: "tenant",
    auth: ["tenant"],
    params: WorkspacePath,
    headers: Idempotent,
    body: CpStartBody,
    responses: accepted,
    errors: [400, 403, 404, 409],
  },
  ...PLAIN_KINDS.map(
    (kind): ApiRoute => ({
      method: "POST",
      path: `/cp/workspaces/:id/${kind}`,
      summary: `${kind === "stop" ? "Stop" : "Suspend"} a workspace`,
      tag: "tenant",
      auth: ["tenant"],
      params: WorkspacePath,
      headers: Idempotent,
      responses: accepted,
      errors: [400, 403, 404, 409],
    }),
  ),
  {
    method: "DELETE",
    path: "/cp/workspaces/:id",
    summary: "Destroy a workspace",
    tag: "tenant",
    auth: ["tenant"],
    params: WorkspacePath,
    headers: Idempotent,
    responses: accepted,
    errors: [400, 403, 404, 409],
  },
  {
    method: "GET",
    path: "/cp/workspaces/:id/status",
    summary: "A workspace's runtime state",
    tag: "tenant",
    auth: ["tenant"],
    params: WorkspacePath,
    responses: { 200: { description: "As the backend reports it", schema: CpRuntimeStatus } },
    errors: [400, 403, 404],
  },
  {
    method: "GET",
    path: "/cp/workspaces",
    summary: "The tenant's workspaces",
    tag: "tenant",
    auth: ["tenant"],
    responses: { 200: { description: "Those not destroyed", schema: CpWorkspaceList } },
    errors: [403],
  },
  {
    method: "GET",
    path: "/cp/operations/:id",
    summary: "Get an operation",
    tag: "tenant",
    auth: ["tenant"],
    params: z.object({ id: OperationId }),
    responses: { 200: { description: "The operation", schema: CpOperationView } },
    errors: [400, 403, 404],
  },
  {
    method: "GET",
    path: "/cp/tenants/config",
    summary: "The tenant's start-up configuration",
    tag: "tenant",
    auth: ["tenant"],
    responses: { 200: { description: "Its org, backend and settings", schema: TenantRuntimeConfig } },
    errors: [403],
  },
  {
    method: "POST",
    path: "/cp/tenants/boot-event",
    summary: "Report a boot stage",
    tag: "tenant",
    auth: ["tenant"],
    body: BootEventBody,
    responses: recorded,
    errors: [400, 403],
  },
  {
    method: "POST",
    path: "/cp/tenants/backup-report",
    summary: "Report a database backup",
    tag: "tenant",
    auth: ["tenant"],
    body: BackupReportBody,
    responses: recorded,
    errors: [400, 403],
  },
];
