/** The platform's HTTP API as the canvas uses it: the admin bearer on every call, errors as ApiError. */

export class ApiError extends Error {
  constructor(status, code, message, requestId, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
  }
}

/** "message (code, request req_…)": what the canvas shows for a failed call. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return error instanceof Error ? error.message : String(error);
  const extra = [error.code, error.requestId ? `request ${error.requestId}` : null]
    .filter(Boolean)
    .join(", ");
  return extra ? `${error.message} (${extra})` : error.message;
}

export function createApi(token, { onUnauthorized } = {}) {
  async function request(method, path, { body, headers = {} } = {}) {
    const init = { method, headers: { authorization: `Bearer ${token}`, ...headers }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "network", `the platform did not answer: ${error.message}`);
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: reported below by status
    }
    if (!response.ok) {
      const envelope = json?.error;
      const error = new ApiError(
        response.status,
        envelope?.code ?? `http_${response.status}`,
        envelope?.message ?? `the platform answered HTTP ${response.status}`,
        envelope?.requestId ?? response.headers.get("x-request-id"),
        envelope?.details,
      );
      if (response.status === 401) onUnauthorized?.(error);
      throw error;
    }
    return json;
  }

  const ws = (id) => `/workspaces/${encodeURIComponent(id)}`;
  return {
    token,
    listWorkspaces: async () => (await request("GET", "/workspaces")).workspaces,
    listPools: async () => (await request("GET", "/pools")).pools,
    getWorkspace: (id) => request("GET", ws(id)),
    listOperations: async (id) => (await request("GET", `${ws(id)}/operations`)).operations,
    createWorkspace: (body, idempotencyKey) =>
      request("POST", "/workspaces", { body, headers: { "idempotency-key": idempotencyKey } }),
    lifecycle: (id, action, idempotencyKey) =>
      action === "delete"
        ? request("DELETE", ws(id), { headers: { "idempotency-key": idempotencyKey } })
        : request("POST", `${ws(id)}/${action}`, { headers: { "idempotency-key": idempotencyKey } }),
  };
}
