import {
  AcceptedOperation,
  CreatedWorkspace,
  CreateWorkspaceBody,
  DomainError,
  OperationList,
  PutSecretBody,
  SecretChange,
  SecretKeyList,
  SecretValues,
  WorkspaceId,
  WorkspaceList,
  WorkspaceSecretName,
  WorkspaceStatus,
  WorkspaceView,
} from "@molecule/contracts";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { z } from "zod";
import { requireAdmin, requireWorkspaceOrAdmin } from "../http/auth.ts";
import { parseWith, readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { SecretService } from "../services/secrets.ts";
import type { LifecycleKind, WorkspaceService } from "../services/workspaces.ts";

const IdempotencyKey = z
  .string()
  .min(1)
  .max(200)
  .optional()
  .describe(
    "A retry with the same key (and body) answers the first request's answer instead of queueing again",
  );

const LIFECYCLE_KINDS = [
  "stop",
  "start",
  "restart",
  "redeploy",
  "suspend",
] as const satisfies LifecycleKind[];

const workspaceId = (raw: string) => parseWith(WorkspaceId, raw, "workspace id in the path");

function idempotencyKey(header: string | undefined): string | undefined {
  return parseWith(IdempotencyKey, header, "Idempotency-Key header");
}

export function workspaceRoutes(workspaces: WorkspaceService, secrets: SecretService) {
  const app = new Hono<AppEnv>();

  // A workspace reads its own secrets with its own token; everything else here is the admin's.
  app.get("/:id/secrets/values", requireWorkspaceOrAdmin(), async (c) => {
    const id = workspaceId(c.req.param("id"));
    if (c.get("caller")?.kind !== "workspace") {
      throw new DomainError("forbidden", "secret values are given only to the workspace's own token");
    }
    await workspaces.getRow(id);
    return c.json({ secrets: await secrets.values(id) });
  });

  app.use("*", requireAdmin());

  app.post("/", async (c) => {
    const key = idempotencyKey(c.req.header("idempotency-key"));
    const body = await readJson(c, CreateWorkspaceBody);
    return c.json(await workspaces.create(body, key, new URL(c.req.url).origin), 202);
  });

  app.get("/", async (c) => {
    const status = c.req.query("status");
    const filter = status === undefined ? undefined : parseWith(WorkspaceStatus, status, "status filter");
    return c.json({ workspaces: await workspaces.list(filter) });
  });

  app.get("/:id", async (c) => c.json(await workspaces.get(workspaceId(c.req.param("id")))));

  app.get("/:id/operations", async (c) =>
    c.json({ operations: await workspaces.listOperations(workspaceId(c.req.param("id"))) }),
  );

  app.delete("/:id", async (c) => {
    const key = idempotencyKey(c.req.header("idempotency-key"));
    return c.json(await workspaces.requestLifecycle(workspaceId(c.req.param("id")), "destroy", key), 202);
  });

  for (const kind of LIFECYCLE_KINDS) {
    app.post(`/:id/${kind}`, async (c) => {
      const key = idempotencyKey(c.req.header("idempotency-key"));
      return c.json(await workspaces.requestLifecycle(workspaceId(c.req.param("id")), kind, key), 202);
    });
  }

  app.get("/:id/secrets", async (c) => {
    const id = workspaceId(c.req.param("id"));
    await workspaces.getRow(id);
    return c.json({ secrets: await secrets.listKeys(id) });
  });

  app.put("/:id/secrets/:key", async (c) => {
    const id = workspaceId(c.req.param("id"));
    const key = parseWith(WorkspaceSecretName, c.req.param("key"), "secret name");
    const body = await readJson(c, PutSecretBody);
    return c.json(await secrets.put(id, key, body.value));
  });

  app.delete("/:id/secrets/:key", async (c) => {
    const id = workspaceId(c.req.param("id"));
    const key = parseWith(WorkspaceSecretName, c.req.param("key"), "secret name");
    return c.json(await secrets.remove(id, key));
  });

  return app;
}

const WorkspacePath = z.object({ id: WorkspaceId });
const SecretPath = z.object({ id: WorkspaceId, key: WorkspaceSecretName });
const IdempotencyHeaders = z.object({ "idempotency-key": IdempotencyKey });
const accepted = { 202: { description: "The operation is queued", schema: AcceptedOperation } };

export const workspaceApi: ApiRoute[] = [
  {
    method: "POST",
    path: "/workspaces",
    summary: "Create a workspace",
    description:
      "Queues its provision (managed runtimes) or answers the connection bundle an external agent registers with.",
    tag: "workspaces",
    auth: ["admin"],
    headers: IdempotencyHeaders,
    body: CreateWorkspaceBody,
    responses: { 202: { description: "Created; its provision is queued", schema: CreatedWorkspace } },
    errors: [400, 409, 413, 415],
  },
  {
    method: "GET",
    path: "/workspaces",
    summary: "List workspaces",
    tag: "workspaces",
    auth: ["admin"],
    query: z.object({ status: WorkspaceStatus.optional() }),
    responses: { 200: { description: "Every workspace of the org", schema: WorkspaceList } },
    errors: [400],
  },
  {
    method: "GET",
    path: "/workspaces/:id",
    summary: "Get a workspace",
    tag: "workspaces",
    auth: ["admin"],
    params: WorkspacePath,
    responses: { 200: { description: "The workspace", schema: WorkspaceView } },
    errors: [400, 404],
  },
  {
    method: "GET",
    path: "/workspaces/:id/operations",
    summary: "List a workspace's operations",
    tag: "workspaces",
    auth: ["admin"],
    params: WorkspacePath,
    responses: { 200: { description: "Its operations, newest first", schema: OperationList } },
    errors: [400, 404],
  },
  {
    method: "DELETE",
    path: "/workspaces/:id",
    summary: "Destroy a workspace",
    tag: "workspaces",
    auth: ["admin"],
    params: WorkspacePath,
    headers: IdempotencyHeaders,
    responses: accepted,
    errors: [400, 404, 409],
  },
  ...LIFECYCLE_KINDS.map(
    (kind): ApiRoute => ({
      method: "POST",
      path: `/workspaces/:id/${kind}`,
      summary: `${kind[0]?.toUpperCase()}${kind.slice(1)} a workspace`,
      tag: "workspaces",
      auth: ["admin"],
      params: WorkspacePath,
      headers: IdempotencyHeaders,
      responses: accepted,
      errors: [400, 404, 409],
    }),
  ),
  {
    method: "GET",
    path: "/workspaces/:id/secrets",
    summary: "List a workspace's secret names",
    tag: "secrets",
    auth: ["admin"],
    params: WorkspacePath,
    responses: { 200: { description: "Names and when each was set; never values", schema: SecretKeyList } },
    errors: [400, 404],
  },
  {
    method: "GET",
    path: "/workspaces/:id/secrets/values",
    summary: "Read a workspace's secret values",
    description: "Only with the workspace's own token: the admin token is refused (403).",
    tag: "secrets",
    auth: ["workspace", "admin"],
    params: WorkspacePath,
    responses: { 200: { description: "Every secret, by name", schema: SecretValues } },
    errors: [400, 403, 404],
  },
  {
    method: "PUT",
    path: "/workspaces/:id/secrets/:key",
    summary: "Set a secret",
    tag: "secrets",
    auth: ["admin"],
    params: SecretPath,
    body: PutSecretBody,
    responses: {
      200: { description: "Set; a running workspace needs a restart to see it", schema: SecretChange },
    },
    errors: [400, 404, 409, 413, 415],
  },
  {
    method: "DELETE",
    path: "/workspaces/:id/secrets/:key",
    summary: "Remove a secret",
    tag: "secrets",
    auth: ["admin"],
    params: SecretPath,
    responses: { 200: { description: "Removed", schema: SecretChange } },
    errors: [400, 404, 409],
  },
];
