/** Per-org tenant databases on the real PostgreSQL server the tests use. */
import { randomBytes } from "node:crypto";
import { ProvisionerError } from "@molecule/provisioner-core";
import postgres from "postgres";
import { afterAll, describe, expect, it } from "vitest";
import { ADMIN_DATABASE_URL } from "../../../../test-support/pg.ts";
import { createTenantDatabases, hostForBridge, scramVerifier } from "./databases.ts";

const deployment = `test-dbs-${randomBytes(4).toString("hex")}`;
const secret = randomBytes(32).toString("hex");
const databases = createTenantDatabases({ adminUrl: ADMIN_DATABASE_URL, passwordSecret: secret, deployment });
const made: { orgId: string; slug: string }[] = [];

function org(): { orgId: string; slug: string } {
  const suffix = randomBytes(4).toString("hex");
  const ref = { orgId: `org_db${suffix}`, slug: `acme-${suffix}` };
  made.push(ref);
  return ref;
}

async function query<T extends object>(url: string, text: string): Promise<T[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return (await sql.unsafe(text)) as unknown as T[];
  } finally {
    await sql.end();
  }
}

const admin = (text: string) => query<Record<string, unknown>>(ADMIN_DATABASE_URL, text);

afterAll(async () => {
  for (const ref of made) await databases.drop(ref);
});

describe("per-org tenant databases", () => {
  it("makes a database the org's own role owns and reaches, the same on every call", async () => {
    const ref = org();
    const url = await databases.ensure(ref);
    expect(await databases.ensure(ref)).toBe(url);
    const name = databases.nameFor(ref);
    expect(name).toMatch(/^tenant_acme_[0-9a-f]{8}_[0-9a-f]{8}$/);
    const parsed = new URL(url);
    expect(parsed.username).toBe(name);
    expect(parsed.pathname).toBe(`/${name}`);
    expect(parsed.password).toBe(databases.passwordFor(ref));
    expect(parsed.host).toBe(new URL(ADMIN_DATABASE_URL).host);

    // The tenant migrates its own schema: it owns the database and its public schema.
    await query(url, "CREATE TABLE t (id int)");
    const [who] = await query<{ user: string; db: string }>(
      url,
      "SELECT current_user AS user, current_database() AS db",
    );
    expect(who).toEqual({ user: name, db: name });
    const [role] = await admin(
      `SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword FROM pg_authid WHERE rolname = '${name}'`,
    );
    expect(role).toMatchObject({
      rolsuper: false,
      rolcreatedb: false,
      rolcreaterole: false,
      rolcanlogin: true,
    });
    expect(String(role?.rolpassword)).toMatch(/^SCRAM-SHA-256\$4096:/);
    expect(String(role?.rolpassword)).not.toContain(databases.passwordFor(ref));
  });

  it("gives each org its own name and keeps other tenants out of it", async () => {
    const [a, b] = [org(), org()];
    const [urlA, urlB] = [await databases.ensure(a), await databases.ensure(b)];
    expect(databases.nameFor(a)).not.toBe(databases.nameFor(b));
    const other = createTenantDatabases({
      adminUrl: ADMIN_DATABASE_URL,
      passwordSecret: secret,
      deployment: "x",
    });
    expect(other.nameFor(a)).not.toBe(databases.nameFor(a));

    // Org b's role on org a's database: CONNECT was taken from PUBLIC.
    const crossed = new URL(urlA);
    crossed.username = new URL(urlB).username;
    crossed.password = new URL(urlB).password;
    await expect(query(crossed.toString(), "SELECT 1")).rejects.toMatchObject({ code: "42501" });
  });

  it("refuses a slug that is not an org slug before touching the server", () => {
    for (const slug of ['a"; DROP DATABASE postgres; --', "UPPER", "x", "a_b", "../x"]) {
      expect(() => databases.nameFor({ orgId: "org_1", slug })).toThrow(ProvisionerError);
    }
  });

  it("drops the database with its open connections, then its role; dropping again is success", async () => {
    const ref = org();
    const url = await databases.ensure(ref);
    const open = postgres(url, { max: 1, onnotice: () => {} });
    await open`SELECT 1`;
    await databases.drop(ref);
    await open.end({ timeout: 1 }).catch(() => {});
    const name = databases.nameFor(ref);
    expect(await admin(`SELECT 1 FROM pg_database WHERE datname = '${name}'`)).toEqual([]);
    expect(await admin(`SELECT 1 FROM pg_roles WHERE rolname = '${name}'`)).toEqual([]);
    await databases.drop(ref);
  });

  it("answers an unreachable server with a retryable error that names no secret", async () => {
    const down = createTenantDatabases({
      adminUrl: "postgres://postgres:admin-pw-123@127.0.0.1:1/postgres",
      passwordSecret: secret,
      deployment,
    });
    const ref = { orgId: "org_down", slug: "down-org" };
    const error = await down.ensure(ref).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ retryable: true });
    const text = `${(error as Error).message} ${JSON.stringify(error)}`;
    expect(text).not.toContain("admin-pw-123");
    expect(text).not.toContain(down.passwordFor(ref));
  });

  it("computes the verifier PostgreSQL itself stores for a password", async () => {
    const role = `scram_check_${randomBytes(4).toString("hex")}`;
    await admin(`SET password_encryption = 'scram-sha-256'; CREATE ROLE ${role} PASSWORD 'pw-1234'`);
    try {
      const [row] = await admin(`SELECT rolpassword FROM pg_authid WHERE rolname = '${role}'`);
      const stored = String(row?.rolpassword);
      const [, iterations, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(stored) ?? [];
      expect(scramVerifier("pw-1234", Buffer.from(String(salt), "base64"), Number(iterations))).toBe(stored);
    } finally {
      await admin(`DROP ROLE ${role}`);
    }
  });

  it("points a bridge tenant at the host gateway for a loopback server only", () => {
    expect(hostForBridge("postgres://u@127.0.0.1:5432/x", "host.docker.internal")).toBe(
      "host.docker.internal:5432",
    );
    expect(hostForBridge("postgres://u@db.internal:5432/x", "host.docker.internal")).toBeUndefined();
  });
});
