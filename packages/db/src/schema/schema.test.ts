import { OPERATION_KINDS, OPERATION_STATUSES, WORKSPACE_STATUSES } from "@molecule/contracts";
import { beforeAll, describe, expect, it } from "vitest";
import { type Catalog, compareSchemas } from "../../../../test-support/schema-drift.ts";
import { PLATFORM_MIGRATIONS } from "../migrate.ts";
import * as schema from "./index.ts";

describe("the tenant platform's schema", () => {
  let migrated: Catalog;
  let generated: Catalog;
  beforeAll(async () => {
    ({ migrated, generated } = await compareSchemas(schema, PLATFORM_MIGRATIONS));
  });

  it("the hand-written migrations build exactly what drizzle-kit generates from the drizzle schema", () => {
    expect(Object.keys(migrated.columns).length).toBeGreaterThan(40);
    expect(migrated).toEqual(generated);
  });

  it("the database's enums are contracts' enums, in order", () => {
    expect(migrated.enums.workspace_status).toEqual([...WORKSPACE_STATUSES]);
    expect(migrated.enums.operation_kind).toEqual([...OPERATION_KINDS]);
    expect(migrated.enums.operation_status).toEqual([...OPERATION_STATUSES]);
  });
});
