/**
 * A stateful in-memory TenantBackend for tests: it holds one tenant per org (handle, url, the environment it was
 * started with, running or not), can be told to fail, and reports what it still runs.
 */
import { type ManagedResource, ProvisionerError, type RuntimeStatus } from "@molecule/provisioner-core";
import type { TenantBackend, TenantHandle, TenantInstance, TenantRef, TenantSpec } from "./backend.ts";

export interface FakeTenant {
  orgId: string;
  slug: string;
  deployment: string;
  id: string;
  url: string;
  env: Record<string, string>;
  secretKeys: string[];
  isCanary: boolean;
  running: boolean;
  image: string;
  /** How many times it was recreated by a redeploy. */
  redeploys: number;
}

type Method = "provision" | "destroy" | "status" | "listManaged" | "stop" | "start" | "redeploy";

export const FAKE_TENANT_IMAGE = "molecule/tenant-platform:fake";
export const FAKE_CANARY_IMAGE = "molecule/tenant-platform:fake-canary";

export interface FakeTenantBackend extends TenantBackend {
  /** The next `times` calls of `method` throw `error` (default: a retryable backend_unavailable). */
  failNext(method: Method, error?: Error, times?: number): void;
  inspect(orgId: string): FakeTenant | undefined;
  tenants(): FakeTenant[];
  /** How many tenants were ever created (a retry that adopts does not count). */
  created(): number;
}

export function createFakeTenantBackend(options: { name?: string } = {}): FakeTenantBackend {
  const name = options.name ?? "fake-tenant";
  const state = new Map<string, FakeTenant>();
  const faults = new Map<Method, { error: Error; times: number }[]>();
  let counter = 0;

  function enter(method: Method): void {
    const queue = faults.get(method);
    const fault = queue?.[0];
    if (!queue || !fault) return;
    fault.times -= 1;
    if (fault.times <= 0) queue.shift();
    throw fault.error;
  }

  const handleOf = (tenant: FakeTenant): TenantHandle => ({ backend: name, tenantId: tenant.id });

  function existing(ref: { orgId: string }): FakeTenant {
    const tenant = state.get(ref.orgId);
    if (!tenant) throw new ProvisionerError("not_found", "fake tenant backend: the org has no tenant", false);
    return tenant;
  }

  return {
    name,
    async provision(spec: TenantSpec, _handle, ctx): Promise<TenantInstance> {
      ctx?.signal?.throwIfAborted();
      enter("provision");
      let tenant = state.get(spec.orgId);
      if (!tenant) {
        counter += 1;
        tenant = {
          orgId: spec.orgId,
          slug: spec.slug,
          deployment: spec.deployment,
          id: `fake-tenant-${counter}`,
          url: `http://tenant-${spec.slug}.invalid:8080`,
          env: { ...spec.env },
          secretKeys: [...spec.secretKeys],
          isCanary: spec.isCanary,
          running: false,
          image: spec.isCanary ? FAKE_CANARY_IMAGE : FAKE_TENANT_IMAGE,
          redeploys: 0,
        };
        state.set(spec.orgId, tenant);
        ctx?.step?.("tenant_created", tenant.id);
      }
      tenant.running = true;
      return { handle: handleOf(tenant), url: tenant.url };
    },
    imageFor: (isCanary) => (isCanary ? FAKE_CANARY_IMAGE : FAKE_TENANT_IMAGE),
    async stop(ref, ctx) {
      enter("stop");
      const tenant = existing(ref);
      tenant.running = false;
      ctx?.step?.("tenant_stopped", tenant.id);
    },
    async start(ref, ctx) {
      enter("start");
      const tenant = existing(ref);
      tenant.running = true;
      ctx?.step?.("tenant_started", tenant.id);
    },
    async redeploy(spec, _handle, image, ctx) {
      enter("redeploy");
      const tenant = existing(spec);
      tenant.image = image;
      tenant.running = true;
      tenant.redeploys += 1;
      ctx?.step?.("tenant_recreated", `${tenant.id} runs ${image}`);
      return { output: `${tenant.id} runs ${image}` };
    },
    async destroy(ref: TenantRef) {
      enter("destroy");
      state.delete(ref.orgId);
    },
    async sweepOrg(ref: TenantRef) {
      state.delete(ref.orgId);
    },
    async status(ref: TenantRef): Promise<RuntimeStatus> {
      enter("status");
      const tenant = state.get(ref.orgId);
      if (!tenant) return { state: "missing" };
      return { state: tenant.running ? "running" : "stopped" };
    },
    async listManaged(): Promise<ManagedResource[]> {
      enter("listManaged");
      return [...state.values()].map((tenant) => ({
        kind: "tenant",
        id: tenant.id,
        workspaceId: null,
        orgId: tenant.orgId,
        state: tenant.running ? "running" : "stopped",
      }));
    },
    failNext(method, error, times = 1) {
      const queue = faults.get(method) ?? [];
      queue.push({
        error:
          error ?? new ProvisionerError("backend_unavailable", `fake tenant backend: ${method} failed`, true),
        times,
      });
      faults.set(method, queue);
    },
    inspect(orgId) {
      const tenant = state.get(orgId);
      return tenant ? structuredClone(tenant) : undefined;
    },
    tenants() {
      return [...state.values()].map((tenant) => structuredClone(tenant));
    },
    created() {
      return counter;
    },
  };
}
