import { DomainError, isId } from "@molecule/contracts";
import { Hono } from "hono";
import { requireAdmin } from "../http/auth.ts";
import type { AppEnv } from "../http/types.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

export function operationRoutes(workspaces: WorkspaceService) {
  const app = new Hono<AppEnv>();
  app.use("*", requireAdmin());
  app.get("/:id", async (c) => {
    const id = c.req.param("id");
    if (!isId("op", id)) throw new DomainError("bad_request", `"${id.slice(0, 64)}" is not an operation id`);
    return c.json(await workspaces.getOperation(id));
  });
  return app;
}
