import { OperationId } from "@molecule/contracts";
import { Hono } from "hono";
import { requireAdmin } from "../http/auth.ts";
import { parseWith } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

export function operationRoutes(workspaces: WorkspaceService) {
  const app = new Hono<AppEnv>();
  app.use("*", requireAdmin());
  app.get("/:id", async (c) => {
    const id = parseWith(OperationId, c.req.param("id"), "operation id in the path");
    return c.json(await workspaces.getOperation(id));
  });
  return app;
}
