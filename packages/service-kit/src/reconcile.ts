/**
 * The reconciler both services run: each pass lists what every backend holds for this deployment and environment
 * (`listManaged`, scoped by the backend), compares it with the live claims the service's database holds, and
 * reports orphans (live resources nobody claims) and ghosts (claims whose resource is gone). The services supply the
 * claims and apply the results (a ghost workspace becomes `failed`; an orphan is destroyed through its backend only
 * when enabled and past the grace period). One replica runs a pass at a time, elected by a PostgreSQL advisory lock.
 * Each pass and each unclaimed resource's first sighting are kept in the database (ReconcileStore), so the stats of
 * any replica show the last pass, whoever ran it, and the grace period survives restarts and changes of leader.
 */
import { hostname } from "node:os";
import { DomainError, type GhostClaim, type OrphanResource, type ReconcileReport } from "@molecule/contracts";
import { describeFailure, type ManagedResource } from "@molecule/provisioner-core";
import type { Logger } from "pino";
import type { OrphanSighting, ReconcileStore } from "./reconcile-runs.ts";

/**
 * The resource kinds that are the workspace or tenant itself (docker, Fly, EC2, the control plane's workspace, the
 * fake backend's): a claim with none of them listed is a ghost. Volumes, groups and secrets alone do not run anything.
 */
export const COMPUTE_KINDS: ReadonlySet<string> = new Set([
  "container",
  "fly_machine",
  "ec2_instance",
  "workspace",
  "tenant",
  "instance",
]);

/** What one backend holds, and how the service judges and removes it. */
export interface ReconcileSource {
  backend: string;
  /** Everything this backend holds for this deployment and environment. */
  list(): Promise<ManagedResource[]>;
  /**
   * Read after `list`, so a resource made just before the listing already has its claim (claims are written before
   * the resources they name). Returns the ghosts among the claims, given what was listed.
   */
  judge(resources: readonly ManagedResource[]): Promise<{
    claimed(resource: ManagedResource): boolean;
    ghosts: GhostClaim[];
    /** The warm pool an unclaimed pool member's resource belongs to (counted in `resources.byPool`), else null. */
    poolMember?(resource: ManagedResource): string | null;
  }>;
  /** Removes an orphan through the backend's own destroy path, which refuses what is not this deployment's. */
  destroy(resource: ManagedResource): Promise<void>;
}

export interface ReconcileSettings {
  intervalMs: number;
  deleteOrphans: boolean;
  orphanGraceMs: number;
}

/** The same for every service: they differ in the sources only. */
export interface ReconcilerDeps {
  sources: () => ReconcileSource[];
  /** `withAdvisoryLock` of the service's database. */
  lock: <T>(key: number, fn: () => Promise<T>) => Promise<{ acquired: true; value: T } | { acquired: false }>;
  /** The advisory lock key, one per service (two services may share a database server). */
  lockKey: number;
  clock: { now(): Date };
  logger: Logger;
  settings: ReconcileSettings;
  /** The service's reconcile tables. */
  store: ReconcileStore;
  /** Names this process in the passes it records (host and process id). */
  replica: string;
  /** Ids of recorded passes (`rcn_…`). */
  ids: { next(prefix: "rcn"): string };
}

/**
 * The claims that name a live workspace or tenant and have no compute resource listed: `claims` are the rows whose
 * status says a resource must exist (and no operation is changing it). Pure.
 */
export function missingCompute<T extends { id: string }>(
  claims: readonly T[],
  resources: readonly ManagedResource[],
  key: (resource: ManagedResource) => string | null = (resource) => resource.workspaceId,
): T[] {
  const present = new Set(resources.filter((resource) => COMPUTE_KINDS.has(resource.kind)).map(key));
  return claims.filter((claim) => !present.has(claim.id));
}

/** This process as a replica: its host and process id. */
export function processReplicaId(): string {
  return `${hostname()}-${process.pid}`;
}

const resourceKey = (backend: string, resource: Pick<ManagedResource, "kind" | "id">) =>
  `${backend}\u0000${resource.kind}\u0000${resource.id}`;

export class Reconciler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(private readonly deps: ReconcilerDeps) {}

  start(): void {
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.run()
        .catch((error: unknown) => {
          if (error instanceof DomainError && error.code === "conflict") return; // another replica's turn
          this.deps.logger.error({ err: error }, "reconcile failed");
        })
        .finally(() => {
          this.running = null;
        });
    }, this.deps.settings.intervalMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** The last pass any replica recorded, or null. */
  lastReport(): Promise<ReconcileReport | null> {
    return this.deps.store.lastRun();
  }

  /** One pass now; a 409 `conflict` when another replica (or another call here) is reconciling. */
  async run(): Promise<ReconcileReport> {
    const outcome = await this.deps.lock(this.deps.lockKey, () => this.pass());
    if (!outcome.acquired) {
      throw new DomainError("conflict", "another replica is reconciling now; try again when it has finished");
    }
    return outcome.value;
  }

  private async pass(): Promise<ReconcileReport> {
    const { clock, settings, logger, store } = this.deps;
    const started = clock.now();
    // When each unclaimed resource was first seen unclaimed; forgotten as soon as it is claimed, deleted or gone.
    const firstSeen = new Map<string, OrphanSighting>();
    for (const sighting of await store.sightings()) {
      firstSeen.set(
        resourceKey(sighting.backend, { kind: sighting.kind, id: sighting.providerId }),
        sighting,
      );
    }
    const orphanList: OrphanResource[] = [];
    const ghostList: GhostClaim[] = [];
    const errors: ReconcileReport["errors"] = [];
    const byBackend: Record<string, number> = {};
    const byOrg: Record<string, number> = {};
    const byPool: Record<string, number> = {};
    const seenNow = new Set<string>();
    for (const source of this.deps.sources()) {
      let resources: ManagedResource[];
      let judged: Awaited<ReturnType<ReconcileSource["judge"]>>;
      try {
        resources = await source.list();
        judged = await source.judge(resources);
      } catch (error) {
        // a listing that failed says nothing: no claim becomes a ghost and nothing is deleted on its account
        const message = describeFailure(error, "the backend could not be listed").message;
        errors.push({ backend: source.backend, message });
        logger.warn({ backend: source.backend, reason: message }, "reconcile: backend listing failed");
        for (const key of firstSeen.keys()) if (key.startsWith(`${source.backend}\u0000`)) seenNow.add(key);
        continue;
      }
      byBackend[source.backend] = (byBackend[source.backend] ?? 0) + resources.length;
      for (const resource of resources) {
        const org = resource.orgId ?? "none";
        byOrg[org] = (byOrg[org] ?? 0) + 1;
        const pool = judged.poolMember?.(resource) ?? null;
        if (pool !== null && COMPUTE_KINDS.has(resource.kind)) byPool[pool] = (byPool[pool] ?? 0) + 1;
        if (pool !== null || judged.claimed(resource)) continue;
        const key = resourceKey(source.backend, resource);
        seenNow.add(key);
        const sighting = firstSeen.get(key) ?? {
          backend: source.backend,
          kind: resource.kind,
          providerId: resource.id,
          firstSeenAt: started,
        };
        firstSeen.set(key, sighting);
        const ageMs = Math.max(0, started.getTime() - sighting.firstSeenAt.getTime());
        let deleted = false;
        if (settings.deleteOrphans && ageMs >= settings.orphanGraceMs) {
          try {
            await source.destroy(resource);
            deleted = true;
            seenNow.delete(key);
            logger.warn(
              { backend: source.backend, kind: resource.kind, providerId: resource.id, ageMs },
              "reconcile: orphan deleted",
            );
          } catch (error) {
            logger.warn(
              {
                backend: source.backend,
                kind: resource.kind,
                providerId: resource.id,
                reason: describeFailure(error, "the backend refused the delete").message,
              },
              "reconcile: orphan not deleted",
            );
          }
        }
        orphanList.push({
          backend: source.backend,
          kind: resource.kind,
          provider_id: resource.id,
          workspace_id: resource.workspaceId,
          org_id: resource.orgId,
          first_seen_at: sighting.firstSeenAt.toISOString(),
          age_ms: ageMs,
          deleted,
        });
      }
      ghostList.push(...judged.ghosts);
    }
    await store.saveSightings(
      [...firstSeen].filter(([key]) => seenNow.has(key)).map(([, sighting]) => sighting),
      started,
    );
    const report: ReconcileReport = {
      at: started.toISOString(),
      replica: this.deps.replica,
      durationMs: Math.max(0, clock.now().getTime() - started.getTime()),
      orphans: orphanList.length,
      ghosts: ghostList.length,
      orphanList,
      ghostList,
      deleted: orphanList.filter((orphan) => orphan.deleted).length,
      deleteOrphans: settings.deleteOrphans,
      orphanGraceMs: settings.orphanGraceMs,
      resources: { byBackend, byOrg, byPool },
      errors,
    };
    await store.recordRun(this.deps.ids.next("rcn"), report, clock.now());
    logger.info(
      {
        orphans: report.orphans,
        ghosts: report.ghosts,
        deleted: report.deleted,
        durationMs: report.durationMs,
        errors: errors.length,
      },
      "reconcile finished",
    );
    return report;
  }
}
