import { WorkspaceId } from "@molecule/contracts";
import { KEEPALIVE_MS, streamEvents, type TokenBound } from "@molecule/service-kit/http";
import type { ApiRoute } from "@molecule/service-kit/openapi";
import { Hono } from "hono";
import { z } from "zod";
import { requireAdmin, requireWorkspaceOrAdmin } from "../http/auth.ts";
import { parseWith } from "../http/body.ts";
import type { AppEnv } from "../http/types.ts";
import type { PlatformDeps } from "../services/deps.ts";
import { workspaceForToken } from "../services/tokens.ts";
import type { WorkspaceService } from "../services/workspaces.ts";

/**
 * Server-sent events: every event for the admin, one workspace's for the admin or that workspace's token. A stream
 * opened with a workspace's token ends (`event: revoked`) as soon as that token is rotated or revoked.
 */
export function eventRoutes(
  deps: Pick<PlatformDeps, "db" | "events">,
  workspaces: WorkspaceService,
  keepaliveMs = KEEPALIVE_MS,
) {
  const bus = deps.events;
  const app = new Hono<AppEnv>();

  app.get("/events", requireAdmin(), (c) => streamEvents(c, bus, {}, keepaliveMs));

  app.get("/workspaces/:id/events", requireWorkspaceOrAdmin(), async (c) => {
    const id = parseWith(WorkspaceId, c.req.param("id"), "workspace id in the path");
    await workspaces.getRow(id);
    const caller = c.get("caller");
    const token: TokenBound | undefined =
      caller?.kind === "workspace"
        ? {
            watch: (changed) => bus.watchCredentials(id, changed),
            current: async () => (await workspaceForToken(deps.db, caller.tokenHash)) === id,
          }
        : undefined;
    return streamEvents(c, bus, { workspaceId: id }, keepaliveMs, token);
  });

  return app;
}

const STREAM = {
  description:
    "Server-sent events, each `id:` resumable with `Last-Event-ID`; a keepalive comment every 15 s (see docs/api.md)",
  contentType: "text/event-stream",
};

export const eventApi: ApiRoute[] = [
  {
    method: "GET",
    path: "/events",
    summary: "Every event of the org, live",
    tag: "events",
    auth: ["admin"],
    responses: { 200: STREAM },
    errors: [403],
  },
  {
    method: "GET",
    path: "/workspaces/:id/events",
    summary: "One workspace's events, live",
    description:
      "With the workspace's own token the stream ends (`event: revoked`) when that token is replaced.",
    tag: "events",
    auth: ["workspace", "admin"],
    params: z.object({ id: WorkspaceId }),
    responses: { 200: STREAM },
    errors: [400, 403, 404],
  },
];
