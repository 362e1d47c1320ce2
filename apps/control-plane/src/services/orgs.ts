import {
  type BootEventBody,
  type CpOrgPoolList,
  type CreatedOrg,
  type CreateOrgBody,
  type DeletedOrg,
  DomainError,
  ORG_OPERATION_KINDS,
  type OrgDetail,
  type OrgView,
  type PoolView,
  type PutPoolBody,
  type TenantRuntimeConfig,
} from "@molecule/contracts";
import { deriveTenantSigningKey, hashToken, mintHexKey, mintToken, sha256Hex } from "@molecule/identity";
import { ProvisionerError, Scrubber } from "@molecule/provisioner-core";
import { and, asc, desc, eq, inArray, isNull, ne } from "drizzle-orm";
import { type CpOrgRow, cpBootEvents, cpOperations, cpOrgs, cpTenantCredentials } from "../db/schema.ts";
import { isUniqueViolation } from "./db-errors.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { orgPools } from "./pools.ts";
import { tenantEnvAad } from "./sealing.ts";
import { tenantApi } from "./tenant-api.ts";
import { orgOperationView, orgView } from "./views.ts";

/** Orgs and their tenants: create (queues the tenant's provision), read, delete (queues the cascade), boot events. */
export class OrgService {
  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly onOperationQueued: () => void = () => {},
  ) {}

  async create(body: CreateOrgBody, key: string | null): Promise<CreatedOrg> {
    const { db, ids, sealer, settings, clock } = this.deps;
    const isCanary = body.is_canary === true;
    // is_canary joins the hash only when set, so keys used before it existed replay as before.
    const requestHash = sha256Hex(
      JSON.stringify({ slug: body.slug, name: body.name, ...(isCanary ? { is_canary: true } : {}) }),
    );
    if (key) {
      const replay = await this.replayCreate(key, requestHash);
      if (replay) return replay;
    }
    const orgId = ids.next("org");
    const credential = mintToken("mct");
    const adminToken = mintToken("mat");
    const env: Record<string, string> = {
      MOLECULE_ORG_ID: orgId,
      CP_PROVISION_URL: settings.publicUrl,
      CP_TENANT_TOKEN: credential,
      PROVISION_SHARED_SECRET: deriveTenantSigningKey(settings.provisionSharedSecret, orgId),
      ADMIN_TOKEN: adminToken,
      SECRETS_ENCRYPTION_KEY: mintHexKey(),
      MOLECULE_ENV: "production",
      MOLECULE_DEPLOYMENT: settings.deployment,
      // Workspaces on the docker backend register plain-http loopback or bridge addresses, as they do when a
      // standalone platform runs them itself; on other backends the tenant keeps its strict agent-URL policy.
      ...(this.deps.provisioner.name === "docker"
        ? { ALLOW_INSECURE_AGENT_URLS: "true", ALLOW_PRIVATE_AGENT_URLS: "true" }
        : {}),
    };
    const sealed = sealer.sealJson(env, tenantEnvAad(orgId));
    const now = clock.now();
    try {
      const org = await db.transaction(async (tx) => {
        const [row] = await tx
          .insert(cpOrgs)
          .values({
            id: orgId,
            slug: body.slug,
            name: body.name,
            status: "provisioning",
            isCanary,
            tenantEnvSealed: sealed.sealed,
            tenantEnvKeyVersion: sealed.keyVersion,
            createIdempotencyKey: key,
            createRequestHash: requestHash,
            createdAt: now,
            updatedAt: now,
          })
          .returning();
        await tx
          .insert(cpTenantCredentials)
          .values({ tokenHash: hashToken(credential), orgId, createdAt: now });
        await tx.insert(cpOperations).values({
          id: ids.next("op"),
          orgId,
          subject: `org:${orgId}`,
          kind: "provision_tenant",
          runAfter: now,
          createdAt: now,
          updatedAt: now,
        });
        return row as CpOrgRow;
      });
      this.onOperationQueued();
      return { org: orgView(org), tenant_credential: credential, tenant_admin_token: adminToken };
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      if (key) {
        const replay = await this.replayCreate(key, requestHash);
        if (replay) return replay;
      }
      throw new DomainError("conflict", `an org with slug "${body.slug}" already exists`);
    }
  }

  /** Same key and body: the same answer (credentials included); same key, other body: 409. */
  private async replayCreate(key: string, requestHash: string): Promise<CreatedOrg | null> {
    const [org] = await this.deps.db.select().from(cpOrgs).where(eq(cpOrgs.createIdempotencyKey, key));
    if (!org) return null;
    if (org.createRequestHash !== requestHash) {
      throw new DomainError("idempotency_key_reused", "this Idempotency-Key was used with a different body");
    }
    if (!org.tenantEnvSealed || org.tenantEnvKeyVersion === null) {
      throw new DomainError("conflict", "the org created with this Idempotency-Key has been deleted");
    }
    const env = this.deps.sealer.openJson<Record<string, string>>(
      org.tenantEnvSealed,
      org.tenantEnvKeyVersion,
      tenantEnvAad(org.id),
    );
    return {
      org: orgView(org),
      tenant_credential: env.CP_TENANT_TOKEN ?? "",
      tenant_admin_token: env.ADMIN_TOKEN ?? "",
    };
  }

  async list(): Promise<OrgView[]> {
    const rows = await this.deps.db
      .select()
      .from(cpOrgs)
      .where(ne(cpOrgs.status, "deleted"))
      .orderBy(asc(cpOrgs.createdAt));
    return rows.map(orgView);
  }

  /** The live org with this slug, else the latest tombstone, else 404. */
  private async bySlug(slug: string): Promise<CpOrgRow> {
    const rows = await this.deps.db
      .select()
      .from(cpOrgs)
      .where(eq(cpOrgs.slug, slug))
      .orderBy(desc(isNull(cpOrgs.deletedAt)), desc(cpOrgs.createdAt))
      .limit(1);
    const row = rows[0];
    if (!row) throw new DomainError("not_found", `no org with slug "${slug}"`);
    return row;
  }

  /** The org's warm pool members on the workspace backend (none once the org is deleted: its deletion destroyed them). */
  async pools(slug: string): Promise<CpOrgPoolList> {
    const org = await this.bySlug(slug);
    return { org_id: org.id, pools: await orgPools(this.deps, org.id) };
  }

  /**
   * Sets one warm pool of the org through its tenant's own `PUT /pools` (with the org's admin token, which never
   * leaves the call): the tenant keeps the pool and its claims, this control plane makes its members. The tenant's
   * refusals keep their status and reason (400: a runtime it does not run; 409: a tier its backend cannot keep
   * suspended); a tenant that does not answer is a 503.
   */
  async setPool(slug: string, body: PutPoolBody): Promise<PoolView> {
    const org = await this.bySlug(slug);
    if (org.status !== "ready") {
      throw new DomainError(
        "conflict",
        `org "${slug}" is ${org.status}: its tenant is not running to hold pools`,
      );
    }
    const scrub = new Scrubber();
    try {
      return await tenantApi(this.deps, org, scrub).setPool(body);
    } catch (error) {
      if (!(error instanceof ProvisionerError)) throw error;
      const message = scrub.text(error.message);
      const status = error.details.httpStatus;
      if (status === 400) throw new DomainError("bad_request", message);
      if (status === 409) throw new DomainError("conflict", message);
      throw new DomainError(error.retryable ? "upstream_unavailable" : "bad_gateway", message);
    }
  }

  async get(slug: string): Promise<OrgDetail> {
    const org = await this.bySlug(slug);
    if (org.status === "deleted") return { org: orgView(org), provision_status: null, operation: null };
    const { db } = this.deps;
    const events = await db
      .select()
      .from(cpBootEvents)
      .where(eq(cpBootEvents.orgId, org.id))
      .orderBy(asc(cpBootEvents.id));
    const [operation] = await db
      .select()
      .from(cpOperations)
      .where(and(eq(cpOperations.orgId, org.id), inArray(cpOperations.kind, [...ORG_OPERATION_KINDS])))
      // Ids sort by time too: they order operations asked for in the same millisecond.
      .orderBy(desc(cpOperations.createdAt), desc(cpOperations.id))
      .limit(1);
    const lastFailedEvent = [...events].reverse().find((event) => event.stage === "failed");
    const lastError =
      operation?.error?.message ??
      (lastFailedEvent ? (lastFailedEvent.detail ?? "the tenant reported a failed boot") : null);
    return {
      org: orgView(org),
      provision_status: {
        status: org.status,
        tenant_url: org.tenantUrl,
        events: events.map((event) => ({
          stage: event.stage,
          detail: event.detail,
          image: event.image,
          at: event.at.toISOString(),
        })),
        last_error: lastError,
      },
      operation: operation ? orgOperationView(operation) : null,
    };
  }

  /**
   * Queues the cascade (workspaces, tenant, rows). Deleting an org that is being deleted answers its running
   * delete operation; deleting a deleted org answers the tombstone with no operation.
   */
  async delete(slug: string, confirm: string): Promise<DeletedOrg> {
    if (confirm !== slug) {
      throw new DomainError("bad_request", `confirm must repeat the org's slug ("${slug}")`);
    }
    const { db, ids, clock } = this.deps;
    const org = await this.bySlug(slug);
    if (org.status === "deleted") return { org: orgView(org), operation: null };
    const result = await db.transaction(async (tx) => {
      const [locked] = await tx.select().from(cpOrgs).where(eq(cpOrgs.id, org.id)).for("update");
      const [existing] = await tx
        .select()
        .from(cpOperations)
        .where(and(eq(cpOperations.orgId, org.id), eq(cpOperations.kind, "destroy_org")))
        .limit(1);
      if (existing) return { org: locked ?? org, operation: existing };
      const now = clock.now();
      const [updated] = await tx
        .update(cpOrgs)
        .set({ status: "deleting", updatedAt: now })
        .where(eq(cpOrgs.id, org.id))
        .returning();
      const [operation] = await tx
        .insert(cpOperations)
        .values({
          id: ids.next("op"),
          orgId: org.id,
          subject: `org-delete:${org.id}`,
          kind: "destroy_org",
          runAfter: now,
          createdAt: now,
          updatedAt: now,
        })
        .returning();
      return { org: updated ?? org, operation };
    });
    this.onOperationQueued();
    return {
      org: orgView(result.org),
      operation: result.operation ? orgOperationView(result.operation) : null,
    };
  }

  /**
   * A boot event from the org's tenant: `ready` makes the org ready (and records the image it reported), `failed`
   * makes it failed.
   */
  async recordBootEvent(orgId: string, event: BootEventBody) {
    const { db, clock } = this.deps;
    const now = clock.now();
    await db.insert(cpBootEvents).values({
      orgId,
      stage: event.stage,
      detail: event.detail ?? null,
      image: event.image ?? null,
      at: now,
    });
    if (event.stage === "ready" && event.image) {
      await db
        .update(cpOrgs)
        .set({ tenantImage: event.image, updatedAt: now })
        .where(and(eq(cpOrgs.id, orgId), ne(cpOrgs.status, "deleted")));
    }
    if (event.stage === "ready" || event.stage === "failed") {
      const from = event.stage === "ready" ? ["provisioning", "failed"] : ["provisioning", "ready"];
      await db
        .update(cpOrgs)
        .set({ status: event.stage, updatedAt: now })
        .where(
          and(eq(cpOrgs.id, orgId), inArray(cpOrgs.status, from as ("provisioning" | "ready" | "failed")[])),
        );
    }
  }

  async runtimeConfig(orgId: string, slug: string): Promise<TenantRuntimeConfig> {
    const { provisioner } = this.deps;
    return {
      org_id: orgId,
      slug,
      workspace_backend: provisioner.name,
      capabilities: provisioner.capabilities(),
      settings: {},
    };
  }
}
