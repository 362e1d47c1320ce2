import type { Tier } from "@molecule/contracts";

/** Everything a backend needs to create or recreate one workspace. */
export interface WorkspaceSpec {
  workspaceId: string;
  orgId: string;
  /** Names this platform installation; every created resource carries it so strays can be found. */
  deployment: string;
  runtime: string;
  tier: Tier;
  /** Injected as environment before the process starts: WORKSPACE_ID, PLATFORM_URL, WORKSPACE_BOOT_TOKEN, secrets. */
  env: Record<string, string>;
  /** Names of `env` entries whose values are secret: never logged, never put in labels or metadata. */
  secretKeys: readonly string[];
  metadata: Record<string, unknown>;
  /**
   * Set when the workspace is started as a warm pool member (`<runtime>-t<tier>`): labelled on what the backend
   * creates, so a listing tells pool members from workspaces. The label stays after the member is claimed.
   */
  pool?: string;
}

/**
 * What a backend returns about the resources it made, stored on the workspace row as JSON and handed back to
 * every later call, so a retry reuses what exists. Backends keep their own ids here.
 *
 * `agentUrl` is the one convention every managed backend follows: the exact address the platform reaches the
 * workspace's agent at, chosen by the backend and injected into the workspace as `AGENT_PUBLIC_URL` before its
 * process starts (docker on a user-defined network `http://ws-<workspace id>:<port>`, Fly
 * `http://<machine id>.vm.<app>.internal:<port>` on the organisation's private network, EC2
 * `http://<private ip>:<port>`; the controlplane backend carries the control plane's backend's address). Absent when
 * the backend assigns none (docker on the host's network, where the agent picks its own port). A managed workspace
 * may register exactly this URL even where the agent URL policy refuses private addresses; read it with
 * `handleAgentUrl`.
 */
export type Handle = { backend: string; agentUrl?: string } & Record<string, unknown>;

/** Identifies a workspace's resources even when no handle was stored (a provision that died early). */
export interface WorkspaceRef {
  workspaceId: string;
  orgId: string;
  handle: Handle | null;
}

export type RuntimeState = "running" | "starting" | "stopped" | "suspended" | "missing" | "unknown";

export interface RuntimeStatus {
  state: RuntimeState;
  /** Why, in words a person can act on (exit code, backend state, the transient error). */
  detail?: string;
}

export interface ManagedResource {
  kind: string;
  id: string;
  workspaceId: string | null;
  orgId: string | null;
  state?: string;
  /** The warm pool it was started for (`WorkspaceSpec.pool`), where the backend labels it. */
  pool?: string | null;
}

export interface Capabilities {
  suspend: boolean;
  /** Largest memory (MB) a suspendable workspace may have, where the backend limits it. */
  suspendMaxMemoryMb?: number;
}

/**
 * The audit of what a backend creates, written by the layer that calls the cloud or engine: `intent` before each
 * create call (so a crash between the call and the caller's commit leaves a row the reconciler can resolve by
 * listing), `claim` after it with the provider's id. `kind` is the kind `listManaged` reports for it. The caller binds
 * the workspace (or tenant) the calls are for.
 */
export interface ResourceAudit {
  intent(kind: string, name: string): Promise<void>;
  claim(kind: string, name: string, providerId: string): Promise<void>;
}

/** Runs one create call between its audit intent and claim; with no audit, just the call. */
export async function auditedCreate<T>(
  audit: ResourceAudit | undefined,
  kind: string,
  name: string,
  create: () => Promise<T>,
  providerId: (created: T) => string,
): Promise<T> {
  await audit?.intent(kind, name);
  const created = await create();
  await audit?.claim(kind, name, providerId(created));
  return created;
}

/** Reports a finished sub-step (volume created, image pulled, …) so operations can show progress. */
export type StepReporter = (name: string, detail?: string) => void;

export interface ProvisionContext {
  step?: StepReporter;
  signal?: AbortSignal;
  /**
   * `start` only: rebuild the process from this spec (new environment, e.g. changed secrets) instead of resuming
   * the old one. The volume and its data are kept.
   */
  recreate?: boolean;
  /**
   * Identifies this call across retries (the caller's operation and attempt). Backends that call a remote API send
   * it as their idempotency key; local backends ignore it.
   */
  idempotencyKey?: string;
  /**
   * The caller's durable operation, the same on every attempt of it (unlike `idempotencyKey`, which changes per
   * attempt). Backends whose create takes a token the cloud remembers (EC2's RunInstances ClientToken) derive it from
   * this, so an attempt after a lost answer gets the VM the first one made instead of a second.
   */
  operationId?: string;
  /** Where the backend records each resource it is about to create and then made (see ResourceAudit). */
  audit?: ResourceAudit;
}

export interface SuspendResult {
  /** false when the backend stopped the workspace instead (no suspend, or the tier is too large). */
  suspended: boolean;
  reason?: string;
}

/**
 * One interface for every backend. Every method is idempotent: calling it again after a crash or a retryable
 * error converges on the same end state and never creates a second resource.
 */
export interface Provisioner {
  readonly name: string;
  capabilities(): Capabilities;
  /** Creates (or adopts) the workspace's resources and starts it. Returns the handle to store. */
  provision(spec: WorkspaceSpec, handle: Handle | null, ctx?: ProvisionContext): Promise<Handle>;
  /** Starts or resumes a stopped/suspended workspace; recreates what is missing from the spec. */
  start(spec: WorkspaceSpec, handle: Handle | null, ctx?: ProvisionContext): Promise<Handle>;
  stop(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<void>;
  /** Suspends where the backend can; otherwise stops and says so. */
  suspend(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<SuspendResult>;
  /** Removes everything the workspace owns. Already gone is success. */
  destroy(ref: WorkspaceRef, ctx?: ProvisionContext): Promise<void>;
  /** A transient error is reported as `unknown`, never as `missing`. */
  status(ref: WorkspaceRef): Promise<RuntimeStatus>;
  /** Every resource this deployment owns, for reconciling strays. */
  listManaged(): Promise<ManagedResource[]>;
}
