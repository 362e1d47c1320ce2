/**
 * The control plane's client for one tenant platform's own admin API, over HTTP at the org's tenant URL. It
 * authenticates with the tenant's ADMIN_TOKEN, which the control plane minted when it created the org and keeps
 * only inside the org's sealed tenant environment (`cp_orgs.tenant_env_sealed`): it is opened for the call, added
 * to the caller's scrubber, sent only in the Authorization header, never stored elsewhere, logged or returned.
 * Every mutation carries an Idempotency-Key, so a retried or resumed call replays the tenant's first answer.
 */
import { OperationView, PoolView, type PutPoolBody, WorkspaceView } from "@molecule/contracts";
import {
  abortableSleep,
  DEFAULT_CP_RETRY,
  errorEnvelope,
  type JsonCall,
  JsonClient,
  type JsonReply,
  ProvisionerError,
  type ProvisionerErrorCode,
  type Scrubber,
} from "@molecule/provisioner-core";
import { z } from "zod";
import type { CpOrgRow } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { tenantEnvAad } from "./sealing.ts";

export interface TenantCall extends JsonCall {
  idempotencyKey?: string;
}

/** One tenant's workspaces and their operations, as the control plane drives them. */
export interface TenantApi {
  listWorkspaces(signal?: AbortSignal): Promise<WorkspaceView[]>;
  /** Queues the workspace's redeploy; the same key answers with the same operation. */
  redeploy(workspaceId: string, idempotencyKey: string, signal?: AbortSignal): Promise<OperationView>;
  operation(operationId: string, signal?: AbortSignal): Promise<OperationView>;
  workspace(workspaceId: string, signal?: AbortSignal): Promise<WorkspaceView>;
  /** Sets one warm pool's target on the tenant (its own `PUT /pools`; the same body again changes nothing). */
  setPool(body: PutPoolBody, signal?: AbortSignal): Promise<PoolView>;
}

const WorkspaceList = z.object({ workspaces: z.array(WorkspaceView) });
const Accepted = z.object({ operation: OperationView });

function answerError(slug: string, call: TenantCall, reply: JsonReply): ProvisionerError {
  const env = errorEnvelope(reply.body);
  const status = reply.status;
  let code: ProvisionerErrorCode = "backend_error";
  if (status === 404) code = "not_found";
  else if (status === 409) code = "conflict";
  else if (status === 429) code = "rate_limited";
  else if (status >= 500) code = "backend_unavailable";
  const transient = status === 429 || status >= 500;
  const what = env.code ? `${env.code}: ${env.message ?? "no message"}` : (env.message ?? "no error message");
  const hint = status === 401 || status === 403 ? " (the tenant does not accept the org's admin token)" : "";
  return new ProvisionerError(
    code,
    `tenant ${slug} ${call.op} (${call.method} ${call.path}) failed with HTTP ${status}: ${what}${hint} (request ${env.requestId ?? reply.requestId ?? "none"})`,
    transient,
    { operation: call.op, httpStatus: status, transient, retryAfterMs: reply.retryAfterMs },
  );
}

function parsed<T>(slug: string, op: string, schema: z.ZodType<T>, body: unknown): T {
  const result = schema.safeParse(body);
  if (!result.success) {
    throw new ProvisionerError(
      "backend_error",
      `tenant ${slug} ${op} answered a body this control plane cannot read`,
      false,
    );
  }
  return result.data;
}

/**
 * The tenant API of `org`; refuses (not_found) an org with no tenant URL or sealed environment yet. The admin token
 * is added to `scrub` before anything is sent.
 */
export function tenantApi(
  deps: Pick<ControlPlaneDeps, "sealer" | "logger">,
  org: CpOrgRow,
  scrub: Scrubber,
): TenantApi {
  if (!org.tenantUrl || !org.tenantEnvSealed || org.tenantEnvKeyVersion === null) {
    throw new ProvisionerError("not_found", `tenant ${org.slug} has no URL or environment yet`, false);
  }
  const env = deps.sealer.openJson<Record<string, string>>(
    org.tenantEnvSealed,
    org.tenantEnvKeyVersion,
    tenantEnvAad(org.id),
  );
  const token = env.ADMIN_TOKEN;
  if (!token) throw new ProvisionerError("not_found", `tenant ${org.slug} has no admin token`, false);
  scrub.add(token);
  const base = new URL(org.tenantUrl);
  const slug = org.slug;
  const client = new JsonClient<TenantCall>({
    retry: DEFAULT_CP_RETRY,
    requestTimeoutMs: 15_000,
    now: Date.now,
    random: Math.random,
    sleep: (ms, signal) => abortableSleep(ms, signal, "tenant wait"),
    logger: deps.logger,
    requestIdHeader: "x-request-id",
    retryMessage: "tenant request failed; retrying",
    url: (call) => new URL(call.path, base),
    headers: (call) => ({
      authorization: `Bearer ${token}`,
      ...(call.idempotencyKey ? { "idempotency-key": call.idempotencyKey } : {}),
    }),
    answerError: (call, reply) => answerError(slug, call, reply),
    connectionError: (call) =>
      new ProvisionerError(
        "backend_unavailable",
        `tenant ${slug} ${call.op} (${call.method} ${call.path}) got no answer from ${base.origin}`,
        true,
        { operation: call.op, transient: true, connection: true },
      ),
    abortedError: (call) => new ProvisionerError("timeout", `tenant ${slug} ${call.op} aborted`, true),
  });
  const get = async <T>(op: string, path: string, schema: z.ZodType<T>, signal?: AbortSignal) =>
    parsed(slug, op, schema, (await client.call({ op, method: "GET", path, signal })).body);

  return {
    listWorkspaces: async (signal) =>
      (await get("list workspaces", "/workspaces", WorkspaceList, signal)).workspaces,
    workspace: (id, signal) =>
      get("get workspace", `/workspaces/${encodeURIComponent(id)}`, WorkspaceView, signal),
    operation: (id, signal) =>
      get("get operation", `/operations/${encodeURIComponent(id)}`, OperationView, signal),
    async redeploy(id, idempotencyKey, signal) {
      const reply = await client.call({
        op: "redeploy",
        method: "POST",
        path: `/workspaces/${encodeURIComponent(id)}/redeploy`,
        idempotencyKey,
        signal,
      });
      return parsed(slug, "redeploy", Accepted, reply.body).operation;
    },
    async setPool(body, signal) {
      const reply = await client.call({ op: "set pool", method: "PUT", path: "/pools", body, signal });
      return parsed(slug, "set pool", PoolView, reply.body);
    },
  };
}
