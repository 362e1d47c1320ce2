import { type WorkspaceRow, workspaces } from "@molecule/db";
import { type ChangeFeed, InvalidatedCache } from "@molecule/service-kit/cluster";
import { eq } from "drizzle-orm";
import type { PlatformDeps } from "./deps.ts";
import { workspaceForToken } from "./tokens.ts";

/** What the proxy needs to know of a workspace at either end of a call (the target's row, the caller's org). */
export type A2ARoute = Pick<
  WorkspaceRow,
  "id" | "orgId" | "status" | "url" | "runtime" | "handle" | "inboundTokenSealed" | "inboundTokenKeyVersion"
>;

const ROUTE_COLUMNS = {
  id: workspaces.id,
  orgId: workspaces.orgId,
  status: workspaces.status,
  url: workspaces.url,
  runtime: workspaces.runtime,
  handle: workspaces.handle,
  inboundTokenSealed: workspaces.inboundTokenSealed,
  inboundTokenKeyVersion: workspaces.inboundTokenKeyVersion,
} as const;

/**
 * Where the A2A proxy looks up who is calling and where a target is: the database every time
 * ({@link databaseDirectory}), or memory kept true by the change feed ({@link cachedDirectory}).
 */
export interface A2ADirectory {
  /** The workspace whose current bearer token hashes to `tokenHash`, or null. */
  tokenOwner(tokenHash: string): Promise<string | null>;
  /** The workspace's routing facts, or null when there is no such row. Never mutated by its users. */
  route(workspaceId: string): Promise<A2ARoute | null>;
  /** Stops following the feed. */
  close(): void;
}

export function databaseDirectory(deps: PlatformDeps): A2ADirectory {
  return {
    tokenOwner: (tokenHash) => workspaceForToken(deps.db, tokenHash),
    async route(workspaceId) {
      const [row] = await deps.db
        .select(ROUTE_COLUMNS)
        .from(workspaces)
        .where(eq(workspaces.id, workspaceId));
      return row ?? null;
    },
    close: () => undefined,
  };
}

/**
 * The directory in memory, so a call in the steady state makes no database round trip. Every committed change to a
 * workspace row or its tokens, by any replica on the database, is announced by the database's triggers on the
 * change feed and drops what this process kept of that workspace (its route, and every token hash that resolved to
 * it); this process's own changes drop it at once, before their notification comes back. While the feed is not
 * connected nothing is answered from memory (service-kit's InvalidatedCache): a revoked token, a stopped target or a
 * new URL takes effect on every replica as soon as the notification arrives. Unknown tokens and ids are not kept
 * (anyone can make them up).
 */
export function cachedDirectory(deps: PlatformDeps, feed: ChangeFeed): A2ADirectory {
  const database = databaseDirectory(deps);
  const owners = new InvalidatedCache<string, string | null>({
    feed,
    tagTopics: ["workspace_tokens", "workspaces"],
    tagOf: (workspaceId) => workspaceId,
    keep: (workspaceId) => workspaceId !== null,
  });
  const routes = new InvalidatedCache<string, A2ARoute | null>({
    feed,
    topics: ["workspaces"],
    keep: (route) => route !== null,
  });
  const unwatch = deps.events.watchWorkspaceChanges((workspaceId) => {
    routes.invalidate(workspaceId);
    owners.invalidateTag(workspaceId);
  });
  return {
    tokenOwner: (tokenHash) => owners.get(tokenHash, () => database.tokenOwner(tokenHash)),
    route: (workspaceId) => routes.get(workspaceId, () => database.route(workspaceId)),
    close() {
      unwatch();
      owners.close();
      routes.close();
    },
  };
}
