import { ProvisionerError } from "../errors.ts";
import { unquoted } from "../scrub.ts";

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

/**
 * The engine's answers an operator needs told apart, recognised by their text and reported in these fixed words.
 * The engine's own text is never passed on: its answers to a container create or start quote the container's
 * configuration, environment variables (and so secrets) included. The first match wins.
 */
const DOCKER_ERROR_CLASSES: readonly (readonly [RegExp, string])[] = [
  [/environment variable/i, "invalid environment variable"],
  [/no such image/i, "no such image"],
  [/pull access denied|repository does not exist|manifest unknown|not found: manifest/i, "image not found"],
  [/unauthorized|authentication required|no basic auth credentials/i, "registry refused the credentials"],
  [/invalid reference format/i, "invalid image reference"],
  [/no such host|dial tcp|network is unreachable|i\/o timeout|tls handshake/i, "registry unreachable"],
  [/no such container/i, "no such container"],
  [/no such volume/i, "no such volume"],
  [/no such network|network \S+ not found/i, "no such network"],
  [/removal of container .* is already in progress/i, "removal already in progress"],
  [/is already in use|name .* conflict/i, "name already in use"],
  [/volume is in use/i, "volume in use"],
  [/port is already allocated|address already in use/i, "port already allocated"],
  [/no space left on device/i, "no space left on device"],
  [/cannot allocate memory|out of memory|minimum memory limit/i, "not enough memory"],
  [/executable file not found|exec format error/i, "the image's command cannot run"],
  [/permission denied/i, "permission denied"],
  [/is not running/i, "container not running"],
  [/is paused/i, "container paused"],
  [/timed out|timeout|deadline exceeded/i, "timed out"],
  [/aborted|canceled|cancelled/i, "aborted"],
];

export function dockerStatusCode(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const code = (error as DockerodeErrorShape).statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The engine's explanation (`{"message": …}`) or the error's message: raw text, only ever matched against. */
function rawText(error: unknown): string {
  if (typeof error !== "object" || error === null) return String(error);
  const shape = error as DockerodeErrorShape;
  const json = shape.json;
  if (typeof json === "object" && json !== null && "message" in json) {
    const message = (json as { message: unknown }).message;
    if (typeof message === "string" && message) return message;
  }
  if (typeof json === "string" && json.trim()) return json.trim();
  return shape.message ?? "";
}

/** Which known kind of engine failure `text` (an engine message, a container's state error) is, in fixed words. */
export function dockerErrorClass(text: string): string | undefined {
  const own = unquoted(text);
  return DOCKER_ERROR_CLASSES.find(([pattern]) => pattern.test(own))?.[1];
}

function genericReason(op: string, status: number | undefined): string {
  if (status === 400)
    return op === "create container"
      ? "the engine refused the container configuration"
      : "the engine refused the request";
  if (status === 404) return "not found";
  if (status === 409) return "conflict";
  if (status !== undefined && status >= 500)
    return op === "start container"
      ? "the engine could not start the container"
      : "the engine reported an internal error";
  return "unexpected error";
}

/**
 * Why a docker call failed, safe to show and log: a known kind of failure in fixed words, else a generic phrase for
 * the operation and status. Never the engine's text (see DOCKER_ERROR_CLASSES); its log has the full message.
 */
export function dockerReason(error: unknown, op = ""): string {
  const known = dockerErrorClass(rawText(error));
  if (!known) return genericReason(op, dockerStatusCode(error));
  // A 400 on create says what was refused; the class says which part.
  return dockerStatusCode(error) === 400 && op === "create container"
    ? `the engine refused the container configuration (${known})`
    : known;
}

/** Maps a dockerode failure of `op` to a typed error; connection failures and 5xx are retryable. */
export function toProvisionerError(op: string, error: unknown): ProvisionerError {
  if (error instanceof ProvisionerError) return error;
  const shape = (typeof error === "object" && error !== null ? error : {}) as DockerodeErrorShape;
  const reason = dockerReason(error, op);
  const status = dockerStatusCode(error);
  const cause = shape.code && /^[A-Z][A-Z0-9_]{1,40}$/.test(shape.code) ? shape.code : undefined;
  const details = {
    op,
    ...(status !== undefined ? { statusCode: status } : {}),
    ...(cause ? { cause } : {}),
    reason,
  };
  if (cause && CONNECTION_CODES.has(cause)) {
    return new ProvisionerError(
      "backend_unavailable",
      `docker engine unreachable during ${op}: ${cause}`,
      true,
      details,
    );
  }
  // The engine will refuse the same environment on every try, whatever status it answered with.
  if (reason.includes("invalid environment variable"))
    return new ProvisionerError(
      "invalid_spec",
      `docker ${op} failed (${status ?? "no status"}): ${reason}`,
      false,
      details,
    );
  if (status === undefined)
    return new ProvisionerError("backend_error", `docker ${op} failed: ${cause ?? reason}`, false, details);
  if (status >= 500) {
    return new ProvisionerError(
      "backend_unavailable",
      `docker ${op} failed (${status}): ${reason}`,
      true,
      details,
    );
  }
  if (status === 404)
    return new ProvisionerError("not_found", `docker ${op} (404): ${reason}`, false, details);
  if (status === 409)
    return new ProvisionerError("conflict", `docker ${op} (409): ${reason}`, false, details);
  if (status === 400)
    return new ProvisionerError("invalid_spec", `docker ${op} failed (400): ${reason}`, false, details);
  if (status === 429)
    return new ProvisionerError("rate_limited", `docker ${op} (429): ${reason}`, true, details);
  return new ProvisionerError("backend_error", `docker ${op} failed (${status}): ${reason}`, false, details);
}
