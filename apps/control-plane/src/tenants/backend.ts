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

/** What a redeploy did, for the operation's steps and for a failure's message. */
export interface TenantRedeployed {
  /** The end of the recreate's output (the SSM command's on EC2), secrets taken out. */
  output?: string;
  /** The tenant's new handle and URL, when the recreate changed them (docker: a new container id). */
  instance?: TenantInstance;
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
  /** The image an org's tenant runs unless a redeploy names one: TENANT_IMAGE, or CANARY_TENANT_IMAGE for a canary. */
  imageFor(isCanary: boolean): string;
  /**
   * Stops the tenant and keeps everything it has (EC2 StopInstances, never a termination; docker stops the container;
   * data and workspaces stay). Already stopped is success; no tenant is a non-retryable `not_found`.
   */
  stop(ref: TenantRef, ctx?: TenantContext): Promise<void>;
  /** Starts a stopped tenant as it was (its data, its image). Already running is success. */
  start(ref: TenantRef, ctx?: TenantContext): Promise<void>;
  /**
   * Makes the tenant run `image`, keeping its data: docker recreates the container on the same volume and port, EC2
   * runs the boot unit again through SSM Run Command with the new image (never a reboot). Resolves once the new
   * container was started, not once it is ready. A recreate that fails, or does not finish in time, throws a
   * non-retryable error whose message carries its output (redacted).
   */
  redeploy(
    spec: TenantSpec,
    handle: TenantHandle | null,
    image: string,
    ctx?: TenantContext,
  ): Promise<TenantRedeployed>;
  /** Every tenant resource this deployment owns, for reconciling strays. */
  listManaged(): Promise<ManagedResource[]>;
}
