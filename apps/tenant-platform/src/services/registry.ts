import { DomainError, EXTERNAL_RUNTIME, type HeartbeatBody, type RegisterBody } from "@molecule/contracts";
import { type WorkspaceRow, workspaces, workspaceTokens } from "@molecule/db";
import { resourceName } from "@molecule/provisioner-core";
import { and, eq, isNull } from "drizzle-orm";
import type { Caller } from "../http/types.ts";
import { assertAgentUrl } from "./agent-url-policy.ts";
import { hashToken, mintToken } from "./crypto.ts";
import type { PlatformDeps } from "./deps.ts";
import { transitionWorkspace } from "./transitions.ts";

const GONE = new Set(["removing", "removed"]);

/**
 * The URL an agent registers replaces the old one; an external workspace whose agent sends none keeps the URL given
 * when it was created (`url: null` clears it).
 */
function registeredUrl(workspace: WorkspaceRow, body: RegisterBody): string | null {
  if (body.url !== undefined) return body.url;
  return workspace.runtime === EXTERNAL_RUNTIME ? workspace.url : null;
}

/**
 * True when a managed workspace's agent registers the address its backend assigned it on a user-defined Docker
 * network: `http://ws-<its own workspace id>:<port>`. The name is the workspace's container, named by the platform,
 * so the agent cannot point it elsewhere; every other URL (and every external workspace's) goes through the policy.
 */
function isAssignedContainerUrl(workspace: WorkspaceRow, url: string): boolean {
  if (workspace.runtime === EXTERNAL_RUNTIME || !URL.canParse(url)) return false;
  const parsed = new URL(url);
  return (
    parsed.protocol === "http:" &&
    parsed.hostname === resourceName(workspace.id) &&
    parsed.port !== "" &&
    !parsed.username &&
    !parsed.password &&
    parsed.pathname === "/" &&
    !parsed.search &&
    !parsed.hash
  );
}

/** Registration (boot token → bearer token) and liveness, as agents anywhere use them. */
export class RegistryService {
  constructor(private readonly deps: PlatformDeps) {}

  /**
   * Exchanges a one-time boot token (or the admin token, for operators registering an agent by hand) for the
   * workspace's bearer token. The boot token is spent in the same transaction; earlier bearer tokens are revoked.
   */
  async register(bearer: string | null, isAdmin: boolean, body: RegisterBody) {
    const { db, settings } = this.deps;
    const authToken = mintToken("mwt");
    await db.transaction(async (tx) => {
      const [workspace] = await tx
        .select()
        .from(workspaces)
        .where(and(eq(workspaces.id, body.id), eq(workspaces.orgId, this.deps.settings.orgId)))
        .for("update");
      if (!isAdmin) {
        const spent = bearer
          ? await tx
              .update(workspaceTokens)
              .set({ spentAt: new Date() })
              .where(
                and(
                  eq(workspaceTokens.tokenHash, hashToken(bearer)),
                  eq(workspaceTokens.workspaceId, body.id),
                  eq(workspaceTokens.kind, "boot"),
                  isNull(workspaceTokens.spentAt),
                ),
              )
              .returning({ hash: workspaceTokens.tokenHash })
          : [];
        if (spent.length === 0 || !workspace) {
          throw new DomainError("unauthorized", "registration needs this workspace's unused boot token");
        }
      }
      if (!workspace) throw new DomainError("not_found", `workspace ${body.id} not found`);
      if (GONE.has(workspace.status)) throw new DomainError("not_found", `workspace ${body.id} was removed`);
      // Checked before anything is written: a refused URL leaves the boot token unspent.
      if (body.url && !isAssignedContainerUrl(workspace, body.url)) {
        assertAgentUrl(body.url, {
          allowInsecure: settings.allowInsecureAgentUrls,
          allowPrivate: settings.allowPrivateAgentUrls,
        });
      }
      await tx
        .delete(workspaceTokens)
        .where(and(eq(workspaceTokens.workspaceId, body.id), eq(workspaceTokens.kind, "auth")));
      await tx
        .insert(workspaceTokens)
        .values({ tokenHash: hashToken(authToken), workspaceId: body.id, kind: "auth" });
      await tx
        .update(workspaces)
        .set({
          url: registeredUrl(workspace, body),
          agentCard: body.agent_card ?? null,
          updatedAt: new Date(),
        })
        .where(eq(workspaces.id, body.id));
    });
    this.deps.logger.info({ workspaceId: body.id }, "agent registered");
    return { auth_token: authToken, workspace_id: body.id };
  }

  /** Records liveness; the first heartbeat (or the first after silence) moves the workspace online. */
  async heartbeat(caller: Caller, body: HeartbeatBody) {
    if (caller.kind === "workspace" && caller.workspaceId !== body.workspace_id) {
      throw new DomainError("forbidden", "a workspace token can only heartbeat for its own workspace");
    }
    const { db } = this.deps;
    const [workspace] = await db
      .update(workspaces)
      .set({ lastHeartbeatAt: this.deps.clock.now() })
      .where(and(eq(workspaces.id, body.workspace_id), eq(workspaces.orgId, this.deps.settings.orgId)))
      .returning({
        id: workspaces.id,
        status: workspaces.status,
        lastHeartbeatAt: workspaces.lastHeartbeatAt,
      });
    if (!workspace) throw new DomainError("not_found", `workspace ${body.workspace_id} not found`);
    if (GONE.has(workspace.status))
      throw new DomainError("not_found", `workspace ${body.workspace_id} was removed`);
    this.deps.events.publish({
      type: "workspace.heartbeat",
      workspaceId: workspace.id,
      data: { at: workspace.lastHeartbeatAt?.toISOString() ?? null, status: body.status ?? "ok" },
    });
    const target = body.status === "degraded" ? "degraded" : "online";
    // The steady state (already where the heartbeat says) costs one UPDATE; only a change reads back.
    if (workspace.status === target) return { ok: true as const, status: workspace.status };
    await transitionWorkspace(this.deps, workspace.id, target, {
      // "provisioning": the agent can be up before the backend call that started it has returned.
      from: ["provisioning", "awaiting_agent", "online", "degraded", "offline"],
      reason: body.status === "degraded" ? (body.detail ?? "agent reported degraded") : null,
    });
    const [current] = await db
      .select({ status: workspaces.status })
      .from(workspaces)
      .where(eq(workspaces.id, workspace.id));
    return { ok: true as const, status: current?.status ?? workspace.status };
  }
}
