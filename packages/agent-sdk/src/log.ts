/** A minimal structured logger: one JSON line per event, with credential-looking fields redacted by configuration. */

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;
export type Logger = (level: LogLevel, event: string, fields?: LogFields) => void;

/** Field names whose values are never written, at any depth. */
export const REDACTED_KEYS = /token|secret|password|passwd|authorization|api[-_]?key|credential|cookie/i;

export function redact(value: unknown, depth = 0): unknown {
  if (depth > 8 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = REDACTED_KEYS.test(key) ? "[redacted]" : redact(v, depth + 1);
  }
  return out;
}

export interface JsonLoggerOptions {
  write?: (line: string) => void;
  now?: () => Date;
  /** Lowest level written. Default "info". */
  level?: LogLevel;
  /** Fields added to every line (e.g. the workspace id). */
  base?: LogFields;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createJsonLogger(options: JsonLoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const now = options.now ?? (() => new Date());
  const min = ORDER[options.level ?? "info"];
  return (level, event, fields) => {
    if (ORDER[level] < min) return;
    const record = redact({ ...options.base, ...fields }) as LogFields;
    write(`${JSON.stringify({ time: now().toISOString(), level, event, ...record })}\n`);
  };
}

export const silentLogger: Logger = () => {};

/** The loggable part of an error: never its stack or cause, which may carry request details. */
export function errorFields(err: unknown): LogFields {
  if (err !== null && typeof err === "object") {
    const e = err as {
      name?: unknown;
      message?: unknown;
      status?: unknown;
      code?: unknown;
      retryable?: unknown;
    };
    return {
      error: typeof e.message === "string" ? e.message : String(err),
      ...(typeof e.code === "string" ? { code: e.code } : {}),
      ...(typeof e.status === "number" ? { status: e.status } : {}),
      ...(typeof e.retryable === "boolean" ? { retryable: e.retryable } : {}),
    };
  }
  return { error: String(err) };
}
