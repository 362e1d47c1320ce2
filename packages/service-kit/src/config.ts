import { isIP } from "node:net";
import { z } from "zod";

export class ConfigError extends Error {}

/**
 * MOLECULE_ENV: the operator's name for this environment. Both vocabularies are accepted: the services' own
 * (`development`, `test`, `production`) and the cloud guides' (`dev`, `staging`, `prod`). The name is kept as given,
 * since cloud resources are tagged with it.
 */
export const MOLECULE_ENVIRONMENTS = ["development", "test", "production", "dev", "staging", "prod"] as const;
export type MoleculeEnvironment = (typeof MOLECULE_ENVIRONMENTS)[number];

/** The environments where the production checks apply: required secrets are never generated. */
const STRICT_ENVIRONMENTS: ReadonlySet<string> = new Set<MoleculeEnvironment>(["production", "prod"]);

export function isStrictEnvironment(environment: string): boolean {
  return STRICT_ENVIRONMENTS.has(environment);
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration: a number of seconds (`90`), or a number with a unit (`500ms`, `90s`, `30m`, `1h`), in milliseconds.
 * `minMs` refuses values too small to be meant (a zero interval would spin).
 */
export function duration(name: string, minMs = 1) {
  return z.string().transform((value, ctx) => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
    const ms = match ? Number(match[1]) * (DURATION_UNITS_MS[match[2] ?? "s"] ?? 1000) : Number.NaN;
    if (!Number.isFinite(ms) || ms < minMs) {
      ctx.addIssue({
        code: "custom",
        message: `${name} must be a duration such as 90 (seconds), 90s, 30m or 1h, at least ${minMs} ms`,
      });
      return z.NEVER;
    }
    return Math.round(ms);
  });
}

/** The variables every service reads, with the same meaning; only the port and data folder defaults differ. */
export function serviceEnv(defaults: { port: number; dataDir: string }) {
  return {
    MOLECULE_ENV: z.enum(MOLECULE_ENVIRONMENTS).default("development"),
    PORT: z.coerce.number().int().min(0).max(65535).default(defaults.port),
    HOST: z.string().default("0.0.0.0"),
    /** `GET /metrics` without authentication on this port (unset: only on PORT, with the admin token). */
    METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
    /**
     * The address METRICS_PORT binds: loopback by default, so only the host's own agent or a scraper sharing the
     * container's network namespace reads it; another address exposes token-free metrics to that whole network.
     */
    METRICS_HOST: z
      .string()
      .refine((text) => isIP(text) !== 0, "METRICS_HOST must be an IP address such as 127.0.0.1 or 0.0.0.0")
      .default("127.0.0.1"),
    MOLECULE_DATA_DIR: z.string().default(defaults.dataDir),
    DATABASE_URL: z.string().url().optional(),
    MOLECULE_DEPLOYMENT: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "MOLECULE_DEPLOYMENT must be lower-case letters, digits and dashes")
      .default("local"),
    OPERATION_LEASE_SECONDS: z.coerce.number().positive().default(30),
    OPERATION_MAX_ATTEMPTS: z.coerce.number().int().min(1).default(5),
    OPERATION_RETENTION_DAYS: z.coerce.number().positive().default(30),
    /** Backup records (not the backups) older than this are deleted; the newest and newest good one are kept. */
    BACKUP_RECORD_RETENTION_DAYS: z.coerce.number().positive().default(90),
    RETENTION_SWEEP_INTERVAL_SECONDS: z.coerce.number().positive().default(3600),
    MAX_BODY_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(256 * 1024),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    /** The reconciler (both services): how often, whether it deletes orphans, and how old an orphan must be. */
    RECONCILE_INTERVAL: duration("RECONCILE_INTERVAL", 1000).default(30 * 60_000),
    RECONCILE_DELETE_ORPHANS: z
      .enum(["true", "false"], {
        message: "RECONCILE_DELETE_ORPHANS must be true or false",
      })
      .default("false"),
    ORPHAN_GRACE: duration("ORPHAN_GRACE", 0).default(60 * 60_000),
    /** Credentials each rate-limit budget remembers at most (idle ones are forgotten first). */
    RATE_LIMIT_MAX_KEYS: z.coerce.number().int().min(1).default(100_000),
  };
}

/**
 * `RATE_LIMIT_<BUDGET>_PER_MINUTE`: requests a minute one credential may make within a budget, all at once if it likes
 * (the budget then refills evenly over the minute); 0 turns the budget off.
 */
export function ratePerMinute(name: string, fallback: number) {
  return z.coerce
    .number({ message: `${name} must be a whole number of requests a minute (0: no limit)` })
    .int(`${name} must be a whole number of requests a minute (0: no limit)`)
    .min(0, `${name} must be 0 (no limit) or more`)
    .default(fallback);
}

export const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * `OPERATION_DEADLINES`: how long one attempt of each operation kind may run, as `kind=seconds` pairs separated by
 * commas (`provision=1200,destroy=300`); kinds left out keep `defaultsSeconds`. Parsed to milliseconds per kind. An
 * unknown kind or a value that is not a positive whole number of seconds is refused, naming it.
 */
export function operationDeadlines<Kind extends string>(defaultsSeconds: Readonly<Record<Kind, number>>) {
  const kinds = Object.keys(defaultsSeconds) as Kind[];
  const toMs = (seconds: Readonly<Record<Kind, number>>): Record<string, number> =>
    Object.fromEntries(kinds.map((kind) => [kind, seconds[kind] * 1000]));
  return z
    .string()
    .transform((text, ctx) => {
      const seconds: Record<Kind, number> = { ...defaultsSeconds };
      for (const pair of text
        .split(",")
        .map((part) => part.trim())
        .filter(Boolean)) {
        const match = /^([a-z_]+)\s*=\s*(\d+)$/.exec(pair);
        const kind = match?.[1] as Kind | undefined;
        if (!match || kind === undefined || !kinds.includes(kind) || Number(match[2]) <= 0) {
          ctx.addIssue({
            code: "custom",
            message: `"${pair}" is not kind=seconds with seconds above 0 and a kind among ${kinds.join(", ")}`,
          });
          return z.NEVER;
        }
        seconds[kind] = Number(match[2]);
      }
      return toMs(seconds);
    })
    .default(() => toMs(defaultsSeconds));
}

type ServiceEnvValues = z.infer<z.ZodObject<ReturnType<typeof serviceEnv>>>;

/** The settings every service has, grouped as both services' configs group them. */
export function serviceConfig(env: ServiceEnvValues, publicUrl: string) {
  return {
    environment: env.MOLECULE_ENV,
    http: { port: env.PORT, host: env.HOST, maxBodyBytes: env.MAX_BODY_BYTES, publicUrl },
    metrics: { port: env.METRICS_PORT ?? null, host: env.METRICS_HOST },
    data: { dir: env.MOLECULE_DATA_DIR, databaseUrl: env.DATABASE_URL },
    deployment: env.MOLECULE_DEPLOYMENT,
    operations: { leaseMs: env.OPERATION_LEASE_SECONDS * 1000, maxAttempts: env.OPERATION_MAX_ATTEMPTS },
    retention: {
      operationsMs: env.OPERATION_RETENTION_DAYS * DAY_MS,
      backupRecordsMs: env.BACKUP_RECORD_RETENTION_DAYS * DAY_MS,
      sweepIntervalMs: env.RETENTION_SWEEP_INTERVAL_SECONDS * 1000,
    },
    logLevel: env.LOG_LEVEL,
    rateLimitMaxKeys: env.RATE_LIMIT_MAX_KEYS,
    reconcile: {
      intervalMs: env.RECONCILE_INTERVAL,
      deleteOrphans: env.RECONCILE_DELETE_ORPHANS === "true",
      orphanGraceMs: env.ORPHAN_GRACE,
    },
  };
}

/**
 * How a container reaches a service listening on `port` of the Docker host: loopback when it shares the host's
 * network, else the Docker host as seen from a bridge network (host.docker.internal, mapped to the host gateway).
 */
export function dockerHostUrl(network: string, port: number): string {
  return network === "host" ? `http://127.0.0.1:${port}` : `http://host.docker.internal:${port}`;
}

/**
 * Validates the environment with `schema`; an empty variable counts as unset. A bad value throws a ConfigError with
 * one line naming the variable.
 */
export function parseEnv<T extends z.ZodType>(
  schema: T,
  env: Record<string, string | undefined>,
): z.infer<T> {
  const cleaned = Object.fromEntries(
    Object.entries(env).filter(([, value]) => value !== undefined && value !== ""),
  );
  const parsed = schema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`invalid configuration: ${issue?.path.join(".")}: ${issue?.message}`);
  }
  return parsed.data;
}
