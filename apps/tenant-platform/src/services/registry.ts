import {
  DomainError,
  EXTERNAL_RUNTIME,
  type HeartbeatBody,
  type RegisterBody,
  type RegisterResponse,
  sourcesOf,
  type WorkspaceStatus,
} from "@molecule/contracts";
import { type Db, type WorkspaceRow, workspaceSecrets, workspaces, workspaceTokens } from "@molecule/db";
import { hashToken, mintToken, SealedValueError } from "@molecule/identity";
import { and, eq, isNull, ne, sql } from "drizzle-orm";
import type { ActivityTracker } from "./activity.ts";
import { checkAgentUrl, isAssignedAgentUrl } from "./agent-url-policy.ts";
import type { PlatformDeps } from "./deps.ts";
import type { HeartbeatBatcher } from "./heartbeats.ts";
import { mintInboundToken } from "./inbound-token.ts";
import { heartbeatIntervalSeconds } from "./liveness.ts";
import { openSecrets } from "./secrets.ts";
import { type Credential, workspaceForToken } from "./tokens.ts";
import { transitionWorkspace } from "./transitions.ts";

const GONE = new Set(["removing", "removed"]);

/**
 * The statuses a heartbeat moves `online` (or `degraded`) from. "provisioning": the agent can be up before the
 * backend call that started it has returned.
 */
const BEAT_SOURCES: readonly WorkspaceStatus[] = [
  "provisioning",
  "awaiting_agent",
  "online",
  "degraded",
  "offline",
];
/** Where the agent's registration, its first heartbeat, moves the workspace `online` from (the table allows it). */
const BEAT_MOVES_ONLINE: ReadonlySet<string> = new Set(
  sourcesOf("online").filter((status) => BEAT_SOURCES.includes(status)),
);

/**
 * The URL an agent registers replaces the old one; an external workspace whose agent sends none keeps the URL given
 * when it was created (`url: null` clears it).
 */
function registeredUrl(workspace: WorkspaceRow, body: RegisterBody): string | null {
  if (body.url !== undefined) return body.url;
  return workspace.runtime === EXTERNAL_RUNTIME ? workspace.url : null;
}

/**
 * A registered URL must be the address the workspace's backend assigned (its handle's `agentUrl`) or pass the agent
 * URL policy. While a managed workspace is `provisioning`, the backend call that assigns the address may not have
 * returned yet (its agent can start first), or a recreated machine may be getting a new one: a URL the policy refuses
 * is then answered 503, which agents retry, rather than 400. Nothing is written either way.
 */
function checkRegisteredUrl(workspace: WorkspaceRow, url: string, settings: PlatformDeps["settings"]): void {
  if (isAssignedAgentUrl(workspace, url)) return;
  const reason = checkAgentUrl(url, {
    allowInsecure: settings.allowInsecureAgentUrls,
    allowPrivate: settings.allowPrivateAgentUrls,
  });
  if (!reason) return;
  if (workspace.runtime !== EXTERNAL_RUNTIME && workspace.status === "provisioning") {
    throw new DomainError(
      "backend_unavailable",
      `workspace ${workspace.id} is still being provisioned and its agent's address is not known yet; register again shortly`,
    );
  }
  throw new DomainError("bad_request", reason, { field: "url" });
}

/** Registration (boot token → bearer token) and liveness, as agents anywhere use them. */
export class RegistryService {
  constructor(
    private readonly deps: PlatformDeps,
    /** Steady-state heartbeats answered from memory and written in batches; without it every beat is written. */
    private readonly batcher: HeartbeatBatcher | null = null,
    /** Where a heartbeat's `active: true` is recorded (it keeps the workspace from being suspended as idle). */
    private readonly activity: ActivityTracker | null = null,
  ) {}

  /**
   * Exchanges a one-time boot token (or the admin token, for operators registering an agent by hand) for the
   * workspace's bearer token and its agent's inbound token (what the A2A proxy presents to it). The boot token is
   * spent in the same transaction; earlier bearer and inbound tokens are replaced.
   *
   * The agent registering with its boot token also gets the workspace's secrets in the answer (one request fewer on
   * its way up), and the registration counts as its first heartbeat: `last_heartbeat_at` is set and the workspace
   * moves `online` from wherever a heartbeat would move it. A secret that cannot be opened does not fail the
   * registration (the boot token is spent by then): the answer comes without `secrets`, the workspace stays where it
   * was until the agent's first heartbeat, and the agent's own `GET /workspaces/:id/secrets/values` answers why. The
   * admin's registration carries no secrets and moves nothing: the agent is not the one calling.
   */
  async register(bearer: string | null, isAdmin: boolean, body: RegisterBody): Promise<RegisterResponse> {
    const { db, settings, sealer, clock } = this.deps;
    const authToken = mintToken("mwt");
    const inbound = mintInboundToken(sealer, body.id);
    const beatAt = clock.now();
    const registered = await db.transaction(async (tx) => {
      // Statements sent together are pipelined on the transaction's connection (one round trip each group); what
      // a check refuses is rolled back with the transaction, the boot token's spending included. The secrets are read
      // with the first group (opened only once the checks pass), so the writes all go in the second.
      const [[workspace], spent, sealedSecrets] = await Promise.all([
        tx
          .select()
          .from(workspaces)
          .where(and(eq(workspaces.id, body.id), eq(workspaces.orgId, this.deps.settings.orgId)))
          .for("update"),
        !isAdmin && bearer
          ? tx
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
          : [],
        isAdmin ? null : secretRows(tx, body.id),
      ]);
      if (!isAdmin) {
        if (spent.length === 0 || !workspace) {
          throw new DomainError("unauthorized", "registration needs this workspace's unused boot token");
        }
      }
      if (!workspace) throw new DomainError("not_found", `workspace ${body.id} not found`);
      if (GONE.has(workspace.status)) throw new DomainError("not_found", `workspace ${body.id} was removed`);
      // Checked before anything is written: a refused URL leaves the boot token unspent.
      if (body.url) checkRegisteredUrl(workspace, body.url, settings);
      const authHash = hashToken(authToken);
      const secrets = sealedSecrets === null ? null : this.openFor(body.id, sealedSecrets);
      const movesOnline =
        secrets !== null && workspace.status !== "online" && BEAT_MOVES_ONLINE.has(workspace.status);
      // The earlier auth tokens go whichever of the two runs first: the delete spares the new one.
      await Promise.all([
        tx
          .delete(workspaceTokens)
          .where(
            and(
              eq(workspaceTokens.workspaceId, body.id),
              eq(workspaceTokens.kind, "auth"),
              ne(workspaceTokens.tokenHash, authHash),
            ),
          ),
        tx.insert(workspaceTokens).values({ tokenHash: authHash, workspaceId: body.id, kind: "auth" }),
        tx
          .update(workspaces)
          .set({
            url: registeredUrl(workspace, body),
            agentCard: body.agent_card ?? null,
            ...inbound.columns,
            ...(secrets === null ? {} : { lastHeartbeatAt: beatAt }),
            ...(movesOnline ? { status: "online" as const, statusReason: null } : {}),
            updatedAt: new Date(),
          })
          .where(eq(workspaces.id, body.id)),
      ]);
      return { from: workspace.status, to: movesOnline ? ("online" as const) : workspace.status, secrets };
    });
    // Earlier bearer tokens were revoked: streams opened with them end now.
    this.deps.events.credentialsChanged(body.id);
    if (registered.secrets !== null) {
      this.deps.events.publish({
        type: "workspace.heartbeat",
        workspaceId: body.id,
        data: { at: beatAt.toISOString(), status: "ok" },
      });
    }
    if (registered.to !== registered.from) {
      this.deps.events.publish({
        type: "workspace.status",
        workspaceId: body.id,
        data: { from: registered.from, to: registered.to, reason: null },
      });
    }
    this.deps.logger.info({ workspaceId: body.id, status: registered.to }, "agent registered");
    return {
      auth_token: authToken,
      workspace_id: body.id,
      heartbeat_interval_seconds: heartbeatIntervalSeconds(settings.staleAfterMs),
      inbound_token: inbound.token,
      status: registered.to,
      ...(registered.secrets === null ? {} : { secrets: registered.secrets }),
    };
  }

  /**
   * The workspace's secret values for its registering agent, or null when one of them cannot be opened (logged with
   * the secret's name and the reason, never a value).
   */
  private openFor(workspaceId: string, rows: SealedSecretRow[]): Record<string, string> | null {
    try {
      return openSecrets(this.deps.sealer, workspaceId, rows);
    } catch (error) {
      if (!(error instanceof SealedValueError)) throw error;
      this.deps.logger.warn(
        { workspaceId, code: error.code, reason: error.message },
        "registered without its secrets: the agent must pull them, and is not online until its first heartbeat",
      );
      return null;
    }
  }

  /**
   * Records liveness; the first heartbeat (or the first after silence) moves the workspace online. A steady-state beat
   * of a token memory knows is answered by the batcher (services/heartbeats.ts) and written with the next batch; a
   * token it knows to be nobody's is refused without a write. The admin may
   * heartbeat any workspace of the org; any other token is checked in the same statement that records the
   * heartbeat (`UPDATE … FROM workspace_tokens`), so the steady state is one round trip. Only when that statement
   * matches nothing is the token looked up again, to say why: 401 unknown or revoked, 403 another workspace's, 404
   * no such workspace.
   */
  async heartbeat(credential: Credential, body: HeartbeatBody) {
    const target = body.status === "degraded" ? "degraded" : "online";
    const interval = heartbeatIntervalSeconds(this.deps.settings.staleAfterMs);
    // The admin's heartbeats (by hand, rare) are always written at once.
    if (this.batcher && credential.kind === "token") {
      const memory = await this.batcher.record(
        credential.tokenHash,
        body.workspace_id,
        target,
        body.status ?? "ok",
      );
      if (memory && "answered" in memory) {
        if (body.active) this.activity?.touch(body.workspace_id);
        return { ok: true as const, status: memory.answered, heartbeat_interval_seconds: interval };
      }
      if (memory?.unknownToken)
        throw new DomainError("unauthorized", "heartbeats need the workspace's bearer token");
    }
    const queries = this.heartbeatQueries();
    const values = {
      at: this.deps.clock.now().toISOString(),
      id: body.workspace_id,
      orgId: this.deps.settings.orgId,
    };
    const [workspace] =
      credential.kind === "admin"
        ? await queries.byAdmin.execute(values)
        : await queries.byToken.execute({ ...values, tokenHash: credential.tokenHash });
    if (!workspace) {
      if (credential.kind === "token") {
        const owner = await workspaceForToken(this.deps.db, credential.tokenHash);
        if (!owner) throw new DomainError("unauthorized", "heartbeats need the workspace's bearer token");
        if (owner !== body.workspace_id) {
          throw new DomainError("forbidden", "a workspace token can only heartbeat for its own workspace");
        }
      }
      throw new DomainError("not_found", `workspace ${body.workspace_id} not found`);
    }
    if (GONE.has(workspace.status))
      throw new DomainError("not_found", `workspace ${body.workspace_id} was removed`);
    if (body.active) this.activity?.touch(workspace.id);
    this.deps.events.publish({
      type: "workspace.heartbeat",
      workspaceId: workspace.id,
      data: { at: workspace.lastHeartbeatAt?.toISOString() ?? null, status: body.status ?? "ok" },
    });
    // The steady state (already where the heartbeat says) costs one UPDATE; only a change reads back.
    if (workspace.status === target) {
      return { ok: true as const, status: workspace.status, heartbeat_interval_seconds: interval };
    }
    await transitionWorkspace(this.deps, workspace.id, target, {
      from: BEAT_SOURCES,
      reason: body.status === "degraded" ? (body.detail ?? "agent reported degraded") : null,
    });
    const [current] = await this.deps.db
      .select({ status: workspaces.status })
      .from(workspaces)
      .where(eq(workspaces.id, workspace.id));
    return {
      ok: true as const,
      status: current?.status ?? workspace.status,
      heartbeat_interval_seconds: interval,
    };
  }

  /** Whether `tokenHash` is some workspace's current bearer token (memory vouches for it, or the database says so). */
  async isCurrentToken(tokenHash: string): Promise<boolean> {
    return this.batcher?.vouchesFor(tokenHash) || (await workspaceForToken(this.deps.db, tokenHash)) !== null;
  }

  private prepared: ReturnType<typeof prepareHeartbeats> | undefined;

  /** Heartbeats are the platform's most frequent write: their SQL is built once. */
  private heartbeatQueries() {
    this.prepared ??= prepareHeartbeats(this.deps.db);
    return this.prepared;
  }
}

type SealedSecretRow = { key: string; sealed: string; keyVersion: number };

/** A workspace's secrets as stored (sealed). */
function secretRows(tx: Pick<Db, "select">, workspaceId: string): Promise<SealedSecretRow[]> {
  return tx
    .select({
      key: workspaceSecrets.key,
      sealed: workspaceSecrets.sealed,
      keyVersion: workspaceSecrets.keyVersion,
    })
    .from(workspaceSecrets)
    .where(eq(workspaceSecrets.workspaceId, workspaceId))
    .execute();
}

function prepareHeartbeats(db: Db) {
  const returned = {
    id: workspaces.id,
    status: workspaces.status,
    lastHeartbeatAt: workspaces.lastHeartbeatAt,
  };
  // The timestamp goes as its ISO text (a placeholder skips the column's own encoding); PostgreSQL casts it.
  const at = sql`${sql.placeholder("at")}::timestamptz`;
  const ofOrg = and(eq(workspaces.id, sql.placeholder("id")), eq(workspaces.orgId, sql.placeholder("orgId")));
  return {
    byAdmin: db
      .update(workspaces)
      .set({ lastHeartbeatAt: at })
      .where(ofOrg)
      .returning(returned)
      .prepare("heartbeat_by_admin"),
    byToken: db
      .update(workspaces)
      .set({ lastHeartbeatAt: at })
      .from(workspaceTokens)
      .where(
        and(
          ofOrg,
          eq(workspaceTokens.tokenHash, sql.placeholder("tokenHash")),
          eq(workspaceTokens.kind, "auth"),
          eq(workspaceTokens.workspaceId, workspaces.id),
        ),
      )
      .returning(returned)
      .prepare("heartbeat_by_token"),
  };
}
