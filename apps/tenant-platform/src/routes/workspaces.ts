import {
  CreateWorkspaceBody,
  DomainError,
  PutSecretBody,
  WorkspaceId,
  WorkspaceSecretName,
  WorkspaceStatus,
} from "@molecule/contracts";
import { Hono } from "hono";
import { z } from "zod";
import { requireAdmin, requireWorkspaceOrAdmin } from "../http/auth.ts";
import { parseWith, readJson } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { SecretService } from "../services/secrets.ts";
import type { LifecycleKind, WorkspaceService } from "../services/workspaces.ts";

const IdempotencyKey = z.string().min(1).max(200).optional();

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

  for (const kind of ["stop", "start", "restart", "redeploy", "suspend"] as const satisfies LifecycleKind[]) {
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
