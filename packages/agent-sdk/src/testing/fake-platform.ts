/**
 * A stateful in-process stand-in for the tenant platform's registry and secrets endpoints, served over real HTTP on
 * 127.0.0.1, for the SDK's own tests. It keeps the contract's rules (one-time boot tokens, bearer auth tokens,
 * removal answers 410) and lets a test inject failures; it is not a call recorder.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeWorkspace {
  id: string;
  bootToken: string | null;
  authToken: string | null;
  /** What the platform's A2A proxy would present to the agent; replaced at every registration. */
  inboundToken: string | null;
  removed: boolean;
  url: string | null;
  agentCard: unknown;
  status: "awaiting_agent" | "online" | "degraded";
  secrets: Record<string, string>;
  /** Plays secrets sealed with a key the platform lacks: register answers without them, the secrets route 503. */
  secretsUnreadable: boolean;
  registrations: number;
  heartbeats: { at: number; status?: string; detail?: string; active?: boolean }[];
}

type Route = "register" | "heartbeat" | "secrets";

export class FakePlatform {
  readonly workspaces = new Map<string, FakeWorkspace>();
  readonly #failures: Record<Route, number[]> = { register: [], heartbeat: [], secrets: [] };
  #server: Server | null = null;
  #requestSeq = 0;
  url = "";
  /** What register and heartbeat answers give as `heartbeat_interval_seconds`; unset: nothing (an older platform). */
  heartbeatIntervalSeconds: number | undefined;
  /** False plays a platform from before inbound tokens: register answers none. */
  issuesInboundTokens = true;
  /**
   * False plays a platform from before registration carried the secrets and counted as the first heartbeat: register
   * answers neither `secrets` nor `status`, and the workspace waits for its first heartbeat.
   */
  registrationIsFirstBeat = true;
  /** The workspaces whose secrets the secrets route gave out, one entry per pull (register answers are not counted). */
  readonly secretPulls: string[] = [];

  /** Adds a workspace and returns its one-time boot token. */
  addWorkspace(id: string, secrets: Record<string, string> = {}): string {
    const bootToken = `boot_${randomBytes(12).toString("hex")}`;
    this.workspaces.set(id, {
      id,
      bootToken,
      authToken: null,
      inboundToken: null,
      removed: false,
      url: null,
      agentCard: undefined,
      status: "awaiting_agent",
      secrets,
      secretsUnreadable: false,
      registrations: 0,
      heartbeats: [],
    });
    return bootToken;
  }

  /** The next calls to `route` answer these statuses (one per call) before normal handling resumes. */
  failNext(route: Route, ...statuses: number[]): void {
    this.#failures[route].push(...statuses);
  }

  /** Invalidates the current auth token (as a token rotation or revocation would). */
  revokeAuthToken(id: string): void {
    const ws = this.#get(id);
    ws.authToken = null;
  }

  /** Issues a fresh boot token (as re-provisioning would). */
  reissueBootToken(id: string): string {
    const ws = this.#get(id);
    ws.bootToken = `boot_${randomBytes(12).toString("hex")}`;
    return ws.bootToken;
  }

  remove(id: string): void {
    this.#get(id).removed = true;
  }

  workspace(id: string): FakeWorkspace {
    return this.#get(id);
  }

  /** Listens on 127.0.0.1 (port 0 picks a free one). */
  async start(port = 0): Promise<string> {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch(() => send(res, 500, this.#error("internal", "fake platform failed")));
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    this.#server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = null;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #get(id: string): FakeWorkspace {
    const ws = this.workspaces.get(id);
    if (!ws) throw new Error(`no workspace ${id}`);
    return ws;
  }

  #interval(): { heartbeat_interval_seconds?: number } {
    return this.heartbeatIntervalSeconds === undefined
      ? {}
      : { heartbeat_interval_seconds: this.heartbeatIntervalSeconds };
  }

  #error(code: string, message: string) {
    this.#requestSeq += 1;
    return { error: { code, message, requestId: `req_${this.#requestSeq}` } };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://x");
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];

    const route: Route | null =
      req.method === "POST" && url.pathname === "/registry/register"
        ? "register"
        : req.method === "POST" && url.pathname === "/registry/heartbeat"
          ? "heartbeat"
          : req.method === "GET" && /^\/workspaces\/[^/]+\/secrets\/values$/.test(url.pathname)
            ? "secrets"
            : null;
    if (!route) return send(res, 404, this.#error("not_found", "no such route"));

    const injected = this.#failures[route].shift();
    if (injected !== undefined)
      return send(res, injected, this.#error("backend_unavailable", "injected failure"));

    let body: Record<string, unknown> = {};
    if (req.method === "POST") {
      try {
        body = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        return send(res, 400, this.#error("bad_request", "invalid JSON"));
      }
    }

    if (route === "register") {
      const ws = this.workspaces.get(String(body.id));
      if (!ws || ws.removed) return send(res, 404, this.#error("not_found", "workspace not found"));
      if (!auth || auth !== ws.bootToken)
        return send(res, 401, this.#error("unauthorized", "invalid boot token"));
      ws.bootToken = null; // one-time
      ws.authToken = `tok_${randomBytes(16).toString("hex")}`;
      ws.inboundToken = `in_${randomBytes(16).toString("hex")}`;
      ws.url = (body.url as string | null | undefined) ?? null;
      ws.agentCard = body.agent_card;
      ws.registrations += 1;
      const firstBeat = this.registrationIsFirstBeat && !ws.secretsUnreadable;
      if (firstBeat) ws.status = "online";
      return send(res, 200, {
        auth_token: ws.authToken,
        workspace_id: ws.id,
        ...(this.issuesInboundTokens ? { inbound_token: ws.inboundToken } : {}),
        ...this.#interval(),
        ...(this.registrationIsFirstBeat ? { status: ws.status } : {}),
        ...(firstBeat ? { secrets: ws.secrets } : {}),
      });
    }

    if (route === "heartbeat") {
      const ws = this.workspaces.get(String(body.workspace_id));
      if (!ws) return send(res, 404, this.#error("not_found", "workspace not found"));
      if (ws.removed) return send(res, 410, this.#error("not_found", "workspace removed"));
      if (!auth || auth !== ws.authToken) return send(res, 401, this.#error("unauthorized", "invalid token"));
      const status = body.status === "degraded" ? "degraded" : "ok";
      ws.status = status === "degraded" ? "degraded" : "online";
      ws.heartbeats.push({
        at: Date.now(),
        status: body.status as string | undefined,
        detail: body.detail as string | undefined,
        ...(body.active === undefined ? {} : { active: body.active as boolean }),
      });
      return send(res, 200, { ok: true, status: ws.status, ...this.#interval() });
    }

    const id = decodeURIComponent(url.pathname.split("/")[2] ?? "");
    const ws = this.workspaces.get(id);
    if (!ws || ws.removed) return send(res, 404, this.#error("not_found", "workspace not found"));
    if (!auth || auth !== ws.authToken) return send(res, 401, this.#error("unauthorized", "invalid token"));
    if (ws.secretsUnreadable) {
      return send(
        res,
        503,
        this.#error("secrets_key_unavailable", "sealed with key version 1, which this process does not have"),
      );
    }
    this.secretPulls.push(ws.id);
    return send(res, 200, { secrets: ws.secrets });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
