import {
  DomainError,
  type OrgOperationKind,
  type PatchOrgBody,
  type TenantOperationAccepted,
} from "@molecule/contracts";
import { and, eq, inArray, ne } from "drizzle-orm";
import { type CpOperationInput, type CpOrgRow, cpOperations, cpOrgs } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";
import { orgOperationView, orgView } from "./views.ts";

export type TenantLifecycleKind = Extract<
  OrgOperationKind,
  "stop_tenant" | "start_tenant" | "redeploy_tenant"
>;

/**
 * What an operator asks of a running org's tenant (the admin API): stop, start and redeploy, each queued as a
 * durable org operation on the org's own subject, so they run one at a time, in order, after its provision. Asking
 * again while the same request is pending or running answers that operation. `setCanary` marks an org canary.
 */
export class TenantLifecycleService {
  constructor(
    private readonly deps: ControlPlaneDeps,
    private readonly onOperationQueued: () => void = () => {},
  ) {}

  stop(slug: string): Promise<TenantOperationAccepted> {
    return this.request(slug, "stop_tenant", {});
  }

  start(slug: string): Promise<TenantOperationAccepted> {
    return this.request(slug, "start_tenant", {});
  }

  /** Without an image: the backend's image for the org (TENANT_IMAGE, or CANARY_TENANT_IMAGE for a canary). */
  async redeploy(slug: string, image: string | undefined): Promise<TenantOperationAccepted> {
    const org = await this.liveOrg(slug);
    if (org.status === "stopped") {
      throw new DomainError("conflict", `the tenant of "${slug}" is stopped: start it before a redeploy`);
    }
    return this.request(slug, "redeploy_tenant", {
      image: image ?? this.deps.tenants.imageFor(org.isCanary),
    });
  }

  async setCanary(slug: string, body: PatchOrgBody) {
    const org = await this.liveOrg(slug);
    const [updated] = await this.deps.db
      .update(cpOrgs)
      .set({ isCanary: body.is_canary, updatedAt: this.deps.clock.now() })
      .where(eq(cpOrgs.id, org.id))
      .returning();
    return { org: orgView(updated ?? org) };
  }

  /** The org with this slug that is not deleted, else 404; one being deleted is a 409. */
  private async liveOrg(slug: string): Promise<CpOrgRow> {
    const [org] = await this.deps.db
      .select()
      .from(cpOrgs)
      .where(and(eq(cpOrgs.slug, slug), ne(cpOrgs.status, "deleted")));
    if (!org) throw new DomainError("not_found", `no org with slug "${slug}"`);
    if (org.status === "deleting") throw new DomainError("conflict", `the org "${slug}" is being deleted`);
    return org;
  }

  private async request(
    slug: string,
    kind: TenantLifecycleKind,
    input: CpOperationInput,
  ): Promise<TenantOperationAccepted> {
    const { db, ids, clock, tenants } = this.deps;
    if (tenants.ownsNothing) {
      throw new DomainError(
        "conflict",
        `tenants run elsewhere (CP_TENANT_BACKEND=${tenants.name}): stop, start and redeploy them where they run`,
      );
    }
    const org = await this.liveOrg(slug);
    const result = await db.transaction(async (tx) => {
      const [locked] = await tx.select().from(cpOrgs).where(eq(cpOrgs.id, org.id)).for("update");
      if (!locked || locked.status === "deleting" || locked.status === "deleted") {
        throw new DomainError("conflict", `the org "${slug}" is being deleted`);
      }
      const waiting = await tx
        .select()
        .from(cpOperations)
        .where(
          and(
            eq(cpOperations.orgId, org.id),
            eq(cpOperations.kind, kind),
            inArray(cpOperations.status, ["pending", "running"]),
          ),
        );
      const same = waiting.find((operation) => (operation.input?.image ?? null) === (input.image ?? null));
      if (same) return { org: locked, operation: same, queued: false };
      const now = clock.now();
      const [operation] = await tx
        .insert(cpOperations)
        .values({
          id: ids.next("op"),
          orgId: org.id,
          subject: `org:${org.id}`,
          kind,
          input,
          runAfter: now,
          createdAt: now,
          updatedAt: now,
        })
        .returning();
      return { org: locked, operation, queued: true };
    });
    if (!result.operation) throw new Error("the operation was not recorded");
    if (result.queued) this.onOperationQueued();
    return { org: orgView(result.org), operation: orgOperationView(result.operation) };
  }
}
