import {
  CP_OPERATION_KINDS,
  OPERATION_STATUSES,
  ORG_OPERATION_KINDS,
  ORG_STATUSES,
} from "@molecule/contracts";
import { beforeAll, describe, expect, it } from "vitest";
import { type Catalog, compareSchemas } from "../../../../test-support/schema-drift.ts";
import { CP_MIGRATIONS } from "./migrations.ts";
import * as schema from "./schema.ts";

describe("the control plane's schema", () => {
  let migrated: Catalog;
  let generated: Catalog;
  beforeAll(async () => {
    ({ migrated, generated } = await compareSchemas(schema, CP_MIGRATIONS));
  });

  it("the hand-written migrations build exactly what drizzle-kit generates from the drizzle schema", () => {
    expect(Object.keys(migrated.columns).length).toBeGreaterThan(40);
    expect(migrated).toEqual(generated);
  });

  it("the database's enums are contracts' enums, in order", () => {
    expect(migrated.enums.cp_org_status).toEqual([...ORG_STATUSES]);
    expect(migrated.enums.cp_operation_status).toEqual([...OPERATION_STATUSES]);
    expect(migrated.enums.cp_operation_kind).toEqual([
      "provision_tenant",
      "destroy_org",
      ...CP_OPERATION_KINDS,
      "stop_tenant",
      "start_tenant",
      "redeploy_tenant",
    ]);
    expect([...(migrated.enums.cp_operation_kind ?? [])].sort()).toEqual(
      [...ORG_OPERATION_KINDS, ...CP_OPERATION_KINDS].sort(),
    );
  });
});
