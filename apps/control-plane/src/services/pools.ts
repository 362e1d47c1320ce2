import type { CpOrgPool } from "@molecule/contracts";
import { and, asc, count, eq, isNotNull, ne } from "drizzle-orm";
import { cpWorkspaces } from "../db/schema.ts";
import type { ControlPlaneDeps } from "./deps.ts";

/**
 * The warm pool members one org's tenant had the control plane make, per pool: the unclaimed ones by state, and the
 * claimed ones still alive. The tenant owns the pools (their targets, the claims, the filler); this is what they
 * hold on the control plane's backend, for the operator (`GET /cp/orgs/:slug/pools`).
 */
export async function orgPools(deps: Pick<ControlPlaneDeps, "db">, orgId: string): Promise<CpOrgPool[]> {
  const rows = await deps.db
    .select({
      pool: cpWorkspaces.pool,
      runtime: cpWorkspaces.runtime,
      tier: cpWorkspaces.tier,
      state: cpWorkspaces.state,
      claimed: isNotNull(cpWorkspaces.poolClaimedAt),
      n: count(),
    })
    .from(cpWorkspaces)
    .where(
      and(eq(cpWorkspaces.orgId, orgId), isNotNull(cpWorkspaces.pool), ne(cpWorkspaces.state, "destroyed")),
    )
    .groupBy(
      cpWorkspaces.pool,
      cpWorkspaces.runtime,
      cpWorkspaces.tier,
      cpWorkspaces.state,
      isNotNull(cpWorkspaces.poolClaimedAt),
    )
    .orderBy(asc(cpWorkspaces.pool));
  const pools = new Map<string, CpOrgPool>();
  for (const row of rows) {
    const label = row.pool ?? "";
    let pool = pools.get(label);
    if (!pool) {
      pool = { pool: label, runtime: row.runtime, tier: row.tier, members: {}, unclaimed: 0, claimed: 0 };
      pools.set(label, pool);
    }
    if (row.claimed) {
      pool.claimed += row.n;
    } else {
      pool.members[row.state] = (pool.members[row.state] ?? 0) + row.n;
      pool.unclaimed += row.n;
    }
  }
  return [...pools.values()];
}
