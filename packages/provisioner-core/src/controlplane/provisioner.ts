/**
 * The `controlplane` backend: a SaaS tenant holds no cloud credentials and asks the control plane to run its
 * workspaces. Each lifecycle call is one signed, idempotent request that answers 202 with an operation; the backend
 * then polls GET /cp/operations/:id until it ends, passing the control plane's steps on as they appear. Polls start
 * almost at once and space out (×1.5 each time, up to 500 ms), so a quick operation is seen within milliseconds of its
 * end and a slow one is never seen more than 500 ms late, for two requests a second.
 */
import {
  backoffDelay,
  CpAccepted,
  CpManagedWorkspace,
  CpOperationView,
  CpRuntimeStatus,
  CpWorkspaceSpec,
} from "@molecule/contracts";
import { ProvisionerError, type ProvisionerErrorCode } from "../errors.ts";
import { assertWorkspaceId } from "../naming.ts";
import type {
  Capabilities,
  Handle,
  ManagedResource,
  ProvisionContext,
  Provisioner,
  RuntimeStatus,
  SuspendResult,
  WorkspaceRef,
  WorkspaceSpec,
} from "../provisioner.ts";
import { auditedCreate } from "../provisioner.ts";
import { type Scrubber, specScrubber } from "../scrub.ts";
import {
  abortableSleep,
  abortedError,
  ControlPlaneClient,
  type ControlPlaneClientOptions,
  type CpCall,
  newIdempotencyKey,
} from "./client.ts";

export interface ControlPlaneProvisionerOptions extends ControlPlaneClientOptions {
  /** What GET /cp/tenants/config said this org's workspace backend can do; `capabilities()` returns it. */
  capabilities: Capabilities;
  /** The org the tenant credential belongs to; reported on every managed resource. */
  orgId?: string;
  /** The wait before the first poll of an operation (default 15 ms); each later wait is 1.5 times the last… */
  pollInitialMs?: number;
  /** …up to this (default 500 ms). */
  pollMaxMs?: number;
  /** How long to wait for one operation to end before giving up with a retryable timeout (default 15 min). */
  operationTimeoutMs?: number;
  /** Sends per status call (default 2): a status is asked again soon anyway, so it does not wait long. */
  statusAttempts?: number;
}

export interface ControlPlaneHandle extends Handle {
  backend: "controlplane";
  workspaceId: string;
  /** The address the control plane's workspace backend assigned the agent, as its operation reported it. */
  agentUrl?: string;
}

type Operation = CpOperationView;

const ManagedList = CpManagedWorkspace.array();

export const DEFAULT_POLL_INITIAL_MS = 15;
export const DEFAULT_POLL_MAX_MS = 500;
const POLL_GROWTH = 1.5;

/** The waits between polls of one operation: `initialMs`, then 1.5 times longer each time, capped at `maxMs`. */
export function* pollDelays(initialMs: number, maxMs: number): Generator<number, never> {
  const policy = { baseMs: initialMs, maxMs, factor: POLL_GROWTH, jitter: "none" } as const;
  for (let attempt = 1; ; attempt += 1) yield Math.max(1, backoffDelay(attempt, policy));
}

/** Enough of a zod error to name the first problem. */
interface ParseError {
  issues: readonly { path: readonly PropertyKey[]; message: string }[];
}

const PROVISIONER_CODES: ReadonlySet<string> = new Set<ProvisionerErrorCode>([
  "invalid_spec",
  "image_unavailable",
  "capacity",
  "rate_limited",
  "conflict",
  "not_found",
  "backend_unavailable",
  "timeout",
  "backend_error",
]);

function path(workspaceId: string, action?: string): string {
  const base = `/cp/workspaces/${encodeURIComponent(assertWorkspaceId(workspaceId))}`;
  return action ? `${base}/${action}` : base;
}

function issueText(error: ParseError): string {
  const issue = error.issues[0];
  return issue ? `${issue.path.map(String).join(".") || "(root)"}: ${issue.message}` : "invalid";
}

/** The wire form of a spec; refuses locally what the control plane would refuse, naming the field, never a value. */
export function toCpSpec(spec: WorkspaceSpec): CpWorkspaceSpec {
  const parsed = CpWorkspaceSpec.safeParse({
    workspace_id: spec.workspaceId,
    runtime: spec.runtime,
    tier: spec.tier,
    env: spec.env,
    secret_keys: [...spec.secretKeys],
    metadata: spec.metadata,
    ...(spec.pool ? { pool: spec.pool } : {}),
  });
  if (!parsed.success) {
    throw new ProvisionerError(
      "invalid_spec",
      `controlplane: workspace spec is not valid for the control plane (${issueText(parsed.error)})`,
      false,
    );
  }
  return parsed.data;
}

function malformed(op: string, error: ParseError): ProvisionerError {
  return new ProvisionerError(
    "backend_error",
    `control plane ${op} answered an unexpected body (${issueText(error)})`,
    false,
    { operation: op },
  );
}

export class ControlPlaneProvisioner implements Provisioner {
  readonly name = "controlplane";
  private readonly client: ControlPlaneClient;
  private readonly pollInitialMs: number;
  private readonly pollMaxMs: number;
  private readonly operationTimeoutMs: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;

  constructor(private readonly options: ControlPlaneProvisionerOptions) {
    this.client = new ControlPlaneClient(options);
    this.pollInitialMs = options.pollInitialMs ?? DEFAULT_POLL_INITIAL_MS;
    this.pollMaxMs = options.pollMaxMs ?? DEFAULT_POLL_MAX_MS;
    this.operationTimeoutMs = options.operationTimeoutMs ?? 15 * 60_000;
    this.now = options.clock ? () => (options.clock as { now(): number }).now() : Date.now;
    this.sleep = options.sleep ?? ((ms, signal) => abortableSleep(ms, signal, "operation poll"));
  }

  capabilities(): Capabilities {
    return { ...this.options.capabilities };
  }

  // Nothing the spec holds (nor the tenant's credentials) leaves in an error or a step detail.
  provision(spec: WorkspaceSpec, _handle: Handle | null, ctx?: ProvisionContext): Promise<Handle> {
    const scrub = this.scrubber(spec);
    return scrub.run(async () => {
      const body = toCpSpec(spec);
      // The control plane owns the machine and audits it itself; here, one claim of the CP-side workspace.
      const operation = await auditedCreate(
        ctx?.audit,
        "workspace",
        spec.workspaceId,
        () =>
          this.mutate(
            { op: "provision", method: "POST", path: "/cp/workspaces/provision", body },
            spec.workspaceId,
            scrub.context(ctx),
          ),
        () => spec.workspaceId,
      );
      return this.handle(spec.workspaceId, operation);
    });
  }

  start(spec: WorkspaceSpec, _handle: Handle | null, ctx?: ProvisionContext): Promise<Handle> {
    const scrub = this.scrubber(spec);
    return scrub.run(async () => {
      const body = { spec: toCpSpec(spec), recreate: ctx?.recreate ?? false };
      const operation = await this.mutate(
        { op: "start", method: "POST", path: path(spec.workspaceId, "start"), body },
        spec.workspaceId,
        scrub.context(ctx),
      );
      return this.handle(spec.workspaceId, operation);
    });
  }

  private scrubber(spec: WorkspaceSpec): Scrubber {
    return specScrubber(spec, this.options.tenantToken, this.options.signingKey);
  }

  async stop(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<void> {
    // Unknown to the control plane: nothing runs, so there is nothing to stop.
    await this.mutate(
      { op: "stop", method: "POST", path: path(ref.workspaceId, "stop"), body: {}, accept: [404] },
      ref.workspaceId,
      ctx,
    );
  }

  async suspend(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<SuspendResult> {
    const operation = await this.mutate(
      { op: "suspend", method: "POST", path: path(ref.workspaceId, "suspend"), body: {}, accept: [404] },
      ref.workspaceId,
      ctx,
    );
    if (!operation) {
      return { suspended: false, reason: "the control plane has no such workspace; nothing to suspend" };
    }
    const suspended = operation.result?.suspended === true;
    const reason =
      operation.result?.reason ?? (suspended ? undefined : "the control plane stopped the workspace instead");
    return reason === undefined ? { suspended } : { suspended, reason };
  }

  async destroy(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<void> {
    // 404: unknown to the control plane, so already gone.
    await this.mutate(
      { op: "destroy", method: "DELETE", path: path(ref.workspaceId), accept: [404] },
      ref.workspaceId,
      ctx,
    );
  }

  async status(ref: WorkspaceRef): Promise<RuntimeStatus> {
    const statusPath = path(ref.workspaceId, "status"); // an invalid id is the caller's error, not an unknown state
    try {
      const reply = await this.client.call({
        op: "status",
        method: "GET",
        path: statusPath,
        accept: [404],
        maxAttempts: this.options.statusAttempts ?? 2,
      });
      if (reply.status === 404)
        return { state: "missing", detail: "the control plane has no such workspace" };
      const parsed = CpRuntimeStatus.safeParse(reply.body);
      if (!parsed.success) return { state: "unknown", detail: malformed("status", parsed.error).message };
      return parsed.data.detail === undefined
        ? { state: parsed.data.state }
        : { state: parsed.data.state, detail: parsed.data.detail };
    } catch (error) {
      // Never "missing" on a failure to ask: the reconciler would act on it.
      return {
        state: "unknown",
        detail: error instanceof ProvisionerError ? error.message : "the control plane could not be asked",
      };
    }
  }

  async listManaged(): Promise<ManagedResource[]> {
    const reply = await this.client.call({ op: "listManaged", method: "GET", path: "/cp/workspaces" });
    const list = reply.body && typeof reply.body === "object" ? (reply.body as { workspaces?: unknown }) : {};
    const parsed = ManagedList.safeParse(list.workspaces);
    if (!parsed.success) throw malformed("listManaged", parsed.error);
    return parsed.data.map((workspace) => ({
      kind: "workspace",
      id: workspace.workspace_id,
      workspaceId: workspace.workspace_id,
      orgId: this.options.orgId ?? null,
      state: workspace.state,
    }));
  }

  /** The tenant's handle: the workspace id, and the agent's address when the control plane's backend assigned one. */
  private handle(workspaceId: string, operation: Operation | null): ControlPlaneHandle {
    const agentUrl = operation?.result?.agent_url;
    return agentUrl
      ? { backend: "controlplane", workspaceId, agentUrl }
      : { backend: "controlplane", workspaceId };
  }

  /**
   * Sends one mutating call (its idempotency key is the caller's, or one made here and reused by every retry),
   * then follows its operation to the end. Returns the finished operation, or null for an `accept`ed status.
   */
  private async mutate(
    call: Omit<CpCall, "idempotencyKey" | "signal">,
    workspaceId: string,
    ctx: ProvisionContext | undefined,
  ): Promise<Operation | null> {
    const idempotencyKey = ctx?.idempotencyKey ?? newIdempotencyKey();
    const reply = await this.client.call({ ...call, idempotencyKey, signal: ctx?.signal });
    if (call.accept?.includes(reply.status)) return null;
    const accepted = CpAccepted.safeParse(reply.body);
    if (!accepted.success) throw malformed(call.op, accepted.error);
    const operation = accepted.data.operation;
    if (operation.workspace_id !== workspaceId) {
      throw new ProvisionerError(
        "backend_error",
        `control plane ${call.op} of ${workspaceId} answered with operation ${operation.id} of ${operation.workspace_id}`,
        false,
        { operation: call.op, cpOperationId: operation.id },
      );
    }
    return this.follow(call.op, operation, ctx);
  }

  /**
   * Polls the operation until it succeeds (returned) or fails (thrown as the control plane's error), on the
   * `pollDelays` schedule, never waiting past the deadline.
   */
  private async follow(op: string, first: Operation, ctx: ProvisionContext | undefined): Promise<Operation> {
    const deadline = this.now() + this.operationTimeoutMs;
    const delays = pollDelays(this.pollInitialMs, this.pollMaxMs);
    let reported = 0;
    let operation = first;
    for (;;) {
      for (const step of operation.steps.slice(reported)) ctx?.step?.(step.name, step.detail);
      reported = Math.max(reported, operation.steps.length);
      if (operation.status === "succeeded") return operation;
      if (operation.status === "failed") throw this.operationError(op, operation);
      const left = deadline - this.now();
      if (left <= 0) {
        throw new ProvisionerError(
          "timeout",
          `control plane ${op} operation ${operation.id} did not finish within ${Math.round(this.operationTimeoutMs / 1000)} s (last status ${operation.status})`,
          true,
          { operation: op, cpOperationId: operation.id },
        );
      }
      if (ctx?.signal?.aborted) throw abortedError(op, ctx.signal);
      await this.sleep(Math.min(delays.next().value, left), ctx?.signal);
      const reply = await this.client.call({
        op: `${op} operation`,
        method: "GET",
        path: `/cp/operations/${encodeURIComponent(operation.id)}`,
        signal: ctx?.signal,
      });
      const parsed = CpOperationView.safeParse(reply.body);
      if (!parsed.success) throw malformed(`${op} operation`, parsed.error);
      operation = parsed.data;
    }
  }

  private operationError(op: string, operation: Operation): ProvisionerError {
    const error = operation.error;
    const cpCode = error?.code ?? "backend_error";
    const code: ProvisionerErrorCode = PROVISIONER_CODES.has(cpCode)
      ? (cpCode as ProvisionerErrorCode)
      : "backend_error";
    return new ProvisionerError(
      code,
      `control plane ${op} of ${operation.workspace_id} failed: ${error?.message ?? "no error message"} (operation ${operation.id}, ${cpCode})`,
      error?.retryable ?? false,
      { operation: op, cpOperationId: operation.id, cpCode },
    );
  }
}

export function createControlPlaneProvisioner(
  options: ControlPlaneProvisionerOptions,
): ControlPlaneProvisioner {
  return new ControlPlaneProvisioner(options);
}
