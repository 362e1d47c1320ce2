import { ProvisionerError } from "@molecule/provisioner-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../../../test-support/pg.ts";
import { CP_MIGRATIONS } from "../db/migrations.ts";
import { cpThinAmiPins } from "../db/schema.ts";
import { chooseAmi, TENANT_RUNTIME } from "./ami.ts";

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase({ migrations: CP_MIGRATIONS });
  await database.db.insert(cpThinAmiPins).values([
    { runtime: TENANT_RUNTIME, region: "eu-west-1", amiId: "ami-0aaaaaaaaaaaaaaaa" },
    { runtime: "echo", region: "eu-west-1", amiId: "ami-0bbbbbbbbbbbbbbbb" },
  ]);
});
afterAll(() => database.drop());

describe("the AMI an EC2 instance boots from", () => {
  it("is the pin for its runtime and region", async () => {
    expect(await chooseAmi(database.db, TENANT_RUNTIME, "eu-west-1", "ami-0ffffffffffffffff")).toEqual({
      amiId: "ami-0aaaaaaaaaaaaaaaa",
      source: "pin",
    });
    expect((await chooseAmi(database.db, "echo", "eu-west-1", null)).amiId).toBe("ami-0bbbbbbbbbbbbbbbb");
  });

  it("else EC2_AMI (another region, another runtime)", async () => {
    expect(await chooseAmi(database.db, TENANT_RUNTIME, "us-east-1", "ami-0ffffffffffffffff")).toEqual({
      amiId: "ami-0ffffffffffffffff",
      source: "EC2_AMI",
    });
    expect((await chooseAmi(database.db, "claude", "eu-west-1", "ami-0ffffffffffffffff")).source).toBe(
      "EC2_AMI",
    );
  });

  it("else a non-retryable error that says how to fix it", async () => {
    const error = await chooseAmi(database.db, "claude", "us-east-1", null).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "invalid_spec", retryable: false });
    expect((error as Error).message).toBe(
      'no AMI for runtime "claude" in us-east-1: pin one in cp_thin_ami_pins or set EC2_AMI',
    );
  });

  it("the table refuses what is not an AMI id, and one pin per runtime and region", async () => {
    await expect(
      database.db.insert(cpThinAmiPins).values({ runtime: "echo", region: "us-east-1", amiId: "ubuntu" }),
    ).rejects.toThrow();
    await expect(
      database.db
        .insert(cpThinAmiPins)
        .values({ runtime: "echo", region: "eu-west-1", amiId: "ami-0cccccccccccccccc" }),
    ).rejects.toThrow();
    expect(await database.db.select().from(cpThinAmiPins)).toHaveLength(2);
  });
});
