import type { ManagedResource, ResourceAudit, RuntimeStatus, StepReporter } from "@molecule/provisioner-core";

/** What the control plane asks a tenant backend to run: one org's tenant platform. */
export interface TenantSpec {
  orgId: string;
  slug: string;
  /** Names this control-plane installation; every created resource carries it so strays can be found. */
  deployment: string;
  /**
   * Environment for the tenant platform: MOLECULE_ORG_ID, CP_PROVISION_URL, CP_TENANT_TOKEN, PROVISION_SHARED_SECRET
   * (the org's derived signing key), ADMIN_TOKEN, SECRETS_ENCRYPTION_KEY, MOLECULE_ENV. The backend adds what only it
   * knows (PORT, PLATFORM_URL, data location).
   */
  env: Record<string, string>;
  /** Names of `env` entries whose values are secret: never logged, labelled or returned. */
  secretKeys: readonly string[];
  /** The org is a canary: its tenant runs the canary image (on EC2: in the canary account). */
  isCanary: boolean;
}

export type TenantHandle = { backend: string } & Record<string, unknown>;

export interface TenantRef {
  orgId: string;
  slug: string;
  handle: TenantHandle | null;
}

export interface TenantInstance {
  handle: TenantHandle;
  /** Where the tenant platform answers HTTP, as the control plane and operators reach it. */
  url: string;
}

export interface TenantContext {
  step?: StepReporter;
  /**
   * Aborts when the org operation's attempt is abandoned at its deadline: every cloud or engine call the backend
   * makes for it runs under it (EC2 requests and waits, docker calls), so a hung call ends with a retryable error.
   */
  signal?: AbortSignal;
  /**
   * The org operation, the same on every attempt of it: backends whose create takes a token the cloud remembers
   * (EC2's RunInstances ClientToken) derive it from this.
   */
  operationId?: string;
  /** Where the backend records each resource it is about to create and then made (provisioner-core's ResourceAudit). */
  audit?: ResourceAudit;
}

/**
 * Runs tenant platforms, one per org. Every method is idempotent: after a crash or a retryable error, calling it
 * again converges on the same state and never makes a second tenant. Errors are provisioner-core's
 * ProvisionerError (with `retryable`).
 */
export interface TenantBackend {
  readonly name: string;
  /** The tenants run elsewhere (started by the operator): nothing to list, so no org is a ghost and none an orphan. */
  readonly ownsNothing?: true;
  /** Creates (or adopts) the org's tenant and starts it; returns once it is started, not once it is ready. */
  provision(spec: TenantSpec, handle: TenantHandle | null, ctx?: TenantContext): Promise<TenantInstance>;
  /** Removes the tenant and everything it owns (container, volume). Already gone is success. */
  destroy(ref: TenantRef, ctx?: TenantContext): Promise<void>;
  /**
   * The org delete's last sweep, after its workspaces and its tenant are destroyed: removes whatever this backend can
   * still find of the org, whatever made it (a stray without a row or a workspace id). Already gone is success.
   */
  sweepOrg(ref: TenantRef, ctx?: TenantContext): Promise<void>;
  status(ref: TenantRef): Promise<RuntimeStatus>;
  /** Every tenant resource this deployment owns, for reconciling strays. */
  listManaged(): Promise<ManagedResource[]>;
}
