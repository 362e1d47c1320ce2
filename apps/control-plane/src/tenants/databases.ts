/**
 * A PostgreSQL database per org for tenants that would otherwise load an embedded database at every start: created
 * with the org's tenant, dropped with it, on one server the control plane reaches with an admin URL (a role allowed
 * to create roles and databases).
 *
 * Each org gets a role and a database of the same name, `tenant_<slug>_<8 hex>` (the hex from the deployment and the
 * org id, so another deployment on the same server, or a later org with the same slug, never meets it). The role may
 * log in and owns its database; nothing else (no superuser, no CREATEDB, no CREATEROLE), and `PUBLIC` loses CONNECT on
 * the database, so one tenant's credential opens no other tenant's database.
 *
 * The password is derived from a secret the control plane holds and the org id, so every call converges on the same
 * credential without storing it. The server is sent only its SCRAM-SHA-256 verifier (computed here), so the password
 * itself never reaches the server's statement log; it is put in the tenant's `DATABASE_URL` and nowhere else.
 */
import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { OrgSlug } from "@molecule/contracts";
import { ProvisionerError } from "@molecule/provisioner-core";
import postgres from "postgres";

export interface TenantDatabaseOptions {
  /** Admin URL of the server the databases live on (CP_TENANT_DATABASE_URL, else the control plane's DATABASE_URL). */
  adminUrl: string;
  /** The secret each org's password is derived from (the control plane's PROVISION_SHARED_SECRET). */
  passwordSecret: string;
  deployment: string;
  /**
   * The server's host and port as the tenant reaches it, when it differs from the admin URL's (a tenant container on
   * a bridge network does not reach the host's 127.0.0.1).
   */
  tenantHost?: string;
}

export interface TenantDatabaseRef {
  orgId: string;
  slug: string;
}

export interface TenantDatabases {
  /** The database and role name of an org. */
  nameFor(ref: TenantDatabaseRef): string;
  /** The org's password, to scrub it from errors: it appears in no log and no message. */
  passwordFor(ref: TenantDatabaseRef): string;
  /** Creates the org's role and database unless they exist (and resets the role's password); returns DATABASE_URL. */
  ensure(ref: TenantDatabaseRef): Promise<string>;
  /** Drops the org's database (closing its connections) and role. Already gone is success. */
  drop(ref: TenantDatabaseRef): Promise<void>;
}

const SCRAM_ITERATIONS = 4096;
const SAFE_NAME = /^tenant_[a-z0-9_]{3,40}_[0-9a-f]{8}$/;

const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();

/** PostgreSQL's SCRAM-SHA-256 verifier for `password` (RFC 5802/7677, as `CREATE ROLE … PASSWORD` stores it). */
export function scramVerifier(password: string, salt: Buffer, iterations = SCRAM_ITERATIONS): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, "sha256");
  const storedKey = createHash("sha256").update(hmac(salted, "Client Key")).digest();
  const serverKey = hmac(salted, "Server Key");
  return `SCRAM-SHA-256$${iterations}:${salt.toString("base64")}$${storedKey.toString("base64")}:${serverKey.toString("base64")}`;
}

/** A database-error code without the driver's error object (which carries the statement, verifier included). */
function failure(action: string, error: unknown): ProvisionerError {
  const code = (error as { code?: unknown }).code;
  const transient = typeof code !== "string" || /^(08|53|57P0)/.test(code) || code.startsWith("ECONN");
  return new ProvisionerError(
    transient ? "backend_unavailable" : "backend_error",
    `tenant database: ${action} failed (${typeof code === "string" ? code : "no answer"})`,
    transient,
  );
}

export function createTenantDatabases(opts: TenantDatabaseOptions): TenantDatabases {
  function nameFor(ref: TenantDatabaseRef): string {
    if (!OrgSlug.safeParse(ref.slug).success) {
      throw new ProvisionerError(
        "invalid_spec",
        "org slug must be 3-40 lower-case letters, digits and dashes",
        false,
      );
    }
    const tag = createHash("sha256").update(`${opts.deployment}\0${ref.orgId}`).digest("hex").slice(0, 8);
    const name = `tenant_${ref.slug.replaceAll("-", "_")}_${tag}`;
    // Checked again as built: the name is put in statements as a quoted identifier.
    if (!SAFE_NAME.test(name))
      throw new ProvisionerError("invalid_spec", "unsafe tenant database name", false);
    return name;
  }

  const passwordFor = (ref: TenantDatabaseRef) =>
    hmac(opts.passwordSecret, `tenant-database-password\0${ref.orgId}`).toString("hex");

  async function withAdmin<T>(action: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    const sql = postgres(opts.adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 });
    try {
      return await fn(sql);
    } catch (error) {
      if (error instanceof ProvisionerError) throw error;
      throw failure(action, error);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  function tenantUrl(name: string, password: string): string {
    const url = new URL(opts.adminUrl);
    if (opts.tenantHost) url.host = opts.tenantHost;
    url.username = name;
    url.password = password;
    url.pathname = `/${name}`;
    return url.toString();
  }

  return {
    nameFor,
    passwordFor,

    async ensure(ref) {
      const name = nameFor(ref);
      const password = passwordFor(ref);
      const salt = hmac(opts.passwordSecret, `tenant-database-salt\0${ref.orgId}`).subarray(0, 16);
      const verifier = scramVerifier(password, salt);
      await withAdmin("create", async (sql) => {
        const role = `"${name}"`;
        const [existing] = await sql`SELECT 1 FROM pg_roles WHERE rolname = ${name}`;
        const attributes = `LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '${verifier}'`;
        try {
          await sql.unsafe(
            existing ? `ALTER ROLE ${role} ${attributes}` : `CREATE ROLE ${role} ${attributes}`,
          );
        } catch (error) {
          // Another attempt created it between the check and the create: set its password instead.
          if ((error as { code?: string }).code !== "42710") throw error;
          await sql.unsafe(`ALTER ROLE ${role} ${attributes}`);
        }
        const [database] = await sql`SELECT 1 FROM pg_database WHERE datname = ${name}`;
        if (!database) {
          try {
            await sql.unsafe(`CREATE DATABASE ${role} OWNER ${role}`);
          } catch (error) {
            if ((error as { code?: string }).code !== "42P04") throw error;
          }
        }
        await sql.unsafe(`REVOKE ALL ON DATABASE ${role} FROM PUBLIC`);
      });
      return tenantUrl(name, password);
    },

    async drop(ref) {
      const name = nameFor(ref);
      await withAdmin("drop", async (sql) => {
        await sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
        await sql.unsafe(`DROP ROLE IF EXISTS "${name}"`);
      });
    },
  };
}

/** The admin URL's host as a container on a bridge network reaches it: a loopback host becomes `gateway`. */
export function hostForBridge(adminUrl: string, gateway: string): string | undefined {
  const url = new URL(adminUrl);
  if (!["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) return undefined;
  return `${gateway}${url.port ? `:${url.port}` : ""}`;
}
