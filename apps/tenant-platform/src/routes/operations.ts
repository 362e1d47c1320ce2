import { OperationId, OperationView } from "@molecule/contracts";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { z } from "zod";
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

export const operationApi: ApiRoute[] = [
  {
    method: "GET",
    path: "/operations/:id",
    summary: "Get an operation",
    description:
      "Its status, attempts, the steps finished so far with their durations, and its error if it failed.",
    tag: "workspaces",
    auth: ["admin"],
    params: z.object({ id: OperationId }),
    responses: { 200: { description: "The operation", schema: OperationView } },
    errors: [400, 404],
  },
];
