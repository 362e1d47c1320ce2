import { ProvisionerError } from "../errors.ts";

/** What dockerode (docker-modem) and Node's sockets put on the errors they throw. */
interface DockerodeErrorShape {
  statusCode?: number;
  code?: string;
  reason?: string;
  json?: unknown;
  message?: string;
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOENT",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EACCES",
  "UND_ERR_SOCKET",
]);

export function dockerStatusCode(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const code = (error as DockerodeErrorShape).statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The engine's own explanation (`{"message": …}`), else the error's message. */
export function dockerReason(error: unknown): string {
  if (typeof error !== "object" || error === null) return String(error);
  const shape = error as DockerodeErrorShape;
  const json = shape.json;
  if (typeof json === "object" && json !== null && "message" in json) {
    const message = (json as { message: unknown }).message;
    if (typeof message === "string" && message) return message;
  }
  if (typeof json === "string" && json.trim()) return json.trim();
  return shape.message?.trim() || String(error);
}

/** Maps a dockerode failure of `op` to a typed error; connection failures and 5xx are retryable. */
export function toProvisionerError(op: string, error: unknown): ProvisionerError {
  if (error instanceof ProvisionerError) return error;
  const shape = (typeof error === "object" && error !== null ? error : {}) as DockerodeErrorShape;
  const reason = dockerReason(error);
  const status = dockerStatusCode(error);
  const details = {
    op,
    ...(status !== undefined ? { statusCode: status } : {}),
    ...(shape.code ? { cause: shape.code } : {}),
  };
  if (shape.code && CONNECTION_CODES.has(shape.code)) {
    return new ProvisionerError(
      "backend_unavailable",
      `docker engine unreachable during ${op}: ${shape.code}`,
      true,
      details,
    );
  }
  if (status === undefined)
    return new ProvisionerError("backend_error", `docker ${op} failed: ${reason}`, false, details);
  if (status >= 500) {
    return new ProvisionerError(
      "backend_unavailable",
      `docker ${op} failed (${status}): ${reason}`,
      true,
      details,
    );
  }
  if (status === 404) return new ProvisionerError("not_found", `docker ${op}: ${reason}`, false, details);
  if (status === 409) return new ProvisionerError("conflict", `docker ${op}: ${reason}`, false, details);
  if (status === 400)
    return new ProvisionerError("invalid_spec", `docker ${op} rejected: ${reason}`, false, details);
  if (status === 429) return new ProvisionerError("rate_limited", `docker ${op}: ${reason}`, true, details);
  return new ProvisionerError("backend_error", `docker ${op} failed (${status}): ${reason}`, false, details);
}
