import type { ConnectionBundle } from "@molecule/contracts";
import { heartbeatIntervalSeconds } from "./liveness.ts";

/**
 * The connection bundle an external workspace's creator gets once: where to register, the one-time registration
 * token, and snippets (curl, Python stdlib, TypeScript fetch, the `molecule-agent` CLI) that work as printed.
 * Pure: the caller decides whether the token may be shown.
 */
export interface BundleInput {
  workspaceId: string;
  platformUrl: string;
  /** The unspent one-time token, or null once it was used (the bundle then carries no token and no snippets). */
  registrationToken: string | null;
  /** The agent URL given at creation, if any. */
  agentUrl: string | null;
  staleAfterMs: number;
}

/** POSIX shell single-quoting: safe for any string. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}

/** A JSON string literal is also a valid Python and TypeScript string literal. */
const literal = (value: string) => JSON.stringify(value);

export function connectionBundle(input: BundleInput): ConnectionBundle {
  const platformUrl = input.platformUrl.replace(/\/+$/, "");
  const interval = heartbeatIntervalSeconds(input.staleAfterMs);
  return {
    workspace_id: input.workspaceId,
    platform_url: platformUrl,
    registration_token: input.registrationToken,
    registration_token_status: input.registrationToken ? "unused" : "used",
    register_url: `${platformUrl}/registry/register`,
    heartbeat_url: `${platformUrl}/registry/heartbeat`,
    secrets_url: `${platformUrl}/workspaces/${input.workspaceId}/secrets/values`,
    heartbeat_interval_seconds: interval,
    agent_url: input.agentUrl,
    snippets: input.registrationToken
      ? {
          curl: curlSnippet(
            platformUrl,
            input.workspaceId,
            input.registrationToken,
            input.agentUrl,
            interval,
          ),
          python: pythonSnippet(
            platformUrl,
            input.workspaceId,
            input.registrationToken,
            input.agentUrl,
            interval,
          ),
          typescript: typescriptSnippet(
            platformUrl,
            input.workspaceId,
            input.registrationToken,
            input.agentUrl,
            interval,
          ),
          cli: cliSnippet(platformUrl, input.workspaceId, input.registrationToken, input.agentUrl),
        }
      : null,
  };
}

function curlSnippet(
  platformUrl: string,
  workspaceId: string,
  token: string,
  agentUrl: string | null,
  interval: number,
): string {
  const register = JSON.stringify(agentUrl ? { id: workspaceId, url: agentUrl } : { id: workspaceId });
  const heartbeat = JSON.stringify({ workspace_id: workspaceId });
  const beat = [
    `curl -fsS -X POST ${shellQuote(`${platformUrl}/registry/heartbeat`)}`,
    `-H "Authorization: Bearer $AUTH_TOKEN"`,
    `-H 'Content-Type: application/json'`,
    `-d ${shellQuote(heartbeat)}`,
  ];
  const field = (name: string) => `sed -n 's/.*"${name}":"\\([^"]*\\)".*/\\1/p'`;
  return [
    `# Registers workspace ${workspaceId} (spends the one-time token) and sends its first heartbeat.`,
    "# Keep $AUTH_TOKEN: it is the workspace's bearer token from now on (heartbeats, secrets, A2A calls).",
    "# Keep $INBOUND_TOKEN: the platform's A2A proxy sends it to your agent in the X-Molecule-Inbound-Token",
    "# header; answer no A2A request without it.",
    `REGISTERED=$(curl -fsS -X POST ${shellQuote(`${platformUrl}/registry/register`)} \\`,
    `  -H ${shellQuote(`Authorization: Bearer ${token}`)} \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${shellQuote(register)}) &&`,
    `AUTH_TOKEN=$(printf '%s' "$REGISTERED" | ${field("auth_token")}) && [ -n "$AUTH_TOKEN" ] &&`,
    `INBOUND_TOKEN=$(printf '%s' "$REGISTERED" | ${field("inbound_token")}) &&`,
    `${beat.join(" \\\n  ")}`,
    `# Stay online: heartbeat at least every ${interval} s, e.g.`,
    `# while sleep ${interval}; do ${beat.join(" ")}; done`,
    "",
  ].join("\n");
}

function pythonSnippet(
  platformUrl: string,
  workspaceId: string,
  token: string,
  agentUrl: string | null,
  interval: number,
): string {
  return [
    `# Registers workspace ${workspaceId} with the one-time token, then heartbeats every ${interval} s.`,
    "# Python 3.8+, standard library only.",
    "import json",
    "import time",
    "import urllib.error",
    "import urllib.request",
    "",
    `PLATFORM_URL = ${literal(platformUrl)}`,
    `WORKSPACE_ID = ${literal(workspaceId)}`,
    `REGISTRATION_TOKEN = ${literal(token)}  # one-time: the first register spends it`,
    `AGENT_URL = ${agentUrl ? literal(agentUrl) : "None"}  # where the platform sends A2A messages, or None`,
    "",
    "",
    "def post(path, token, body):",
    "    request = urllib.request.Request(",
    "        PLATFORM_URL + path,",
    "        data=json.dumps(body).encode(),",
    '        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},',
    '        method="POST",',
    "    )",
    "    with urllib.request.urlopen(request, timeout=10) as response:",
    "        return json.load(response)",
    "",
    "",
    'registration = {"id": WORKSPACE_ID}',
    "if AGENT_URL:",
    '    registration["url"] = AGENT_URL',
    'registered = post("/registry/register", REGISTRATION_TOKEN, registration)',
    "# Keep auth_token: it is the workspace's bearer token from now on (heartbeats, secrets, A2A calls).",
    'auth_token = registered["auth_token"]',
    "# Keep inbound_token: the platform's A2A proxy sends it to your agent in the X-Molecule-Inbound-Token",
    "# header; answer no A2A request without it.",
    'inbound_token = registered["inbound_token"]',
    "while True:",
    "    try:",
    '        beat = post("/registry/heartbeat", auth_token, {"workspace_id": WORKSPACE_ID})',
    '        print("heartbeat:", beat["status"], flush=True)',
    "    except urllib.error.HTTPError as error:",
    "        if error.code in (404, 410):",
    '            raise SystemExit("the workspace was removed")',
    '        print("heartbeat failed:", error, flush=True)',
    "    except OSError as error:",
    '        print("heartbeat failed:", error, flush=True)',
    `    time.sleep(${interval})`,
    "",
  ].join("\n");
}

function typescriptSnippet(
  platformUrl: string,
  workspaceId: string,
  token: string,
  agentUrl: string | null,
  interval: number,
): string {
  return [
    `// Registers workspace ${workspaceId} with the one-time token, then heartbeats every ${interval} s.`,
    "// Node 20+ (global fetch); save as agent.mts and run `npx tsx agent.mts`.",
    `const PLATFORM_URL = ${literal(platformUrl)};`,
    `const WORKSPACE_ID = ${literal(workspaceId)};`,
    `const REGISTRATION_TOKEN = ${literal(token)}; // one-time: the first register spends it`,
    `const AGENT_URL: string | null = ${agentUrl ? literal(agentUrl) : "null"}; // where the platform sends A2A messages`,
    "",
    "async function post(path: string, token: string, body: unknown): Promise<Record<string, unknown>> {",
    "  const response = await fetch(PLATFORM_URL + path, {",
    '    method: "POST",',
    '    headers: { authorization: "Bearer " + token, "content-type": "application/json" },',
    "    body: JSON.stringify(body),",
    "    signal: AbortSignal.timeout(10_000),",
    "  });",
    "  if (response.status === 404 || response.status === 410) {",
    '    console.error("the workspace was removed");',
    "    process.exit(0);",
    "  }",
    '  if (!response.ok) throw new Error(path + " answered " + response.status + ": " + (await response.text()));',
    "  return (await response.json()) as Record<string, unknown>;",
    "}",
    "",
    "// Keep authToken: it is the workspace's bearer token from now on (heartbeats, secrets, A2A calls).",
    'const registered = await post("/registry/register", REGISTRATION_TOKEN, {',
    "  id: WORKSPACE_ID,",
    "  ...(AGENT_URL ? { url: AGENT_URL } : {}),",
    "});",
    "const authToken = String(registered.auth_token);",
    "// Keep inboundToken: the platform's A2A proxy sends it to your agent in the x-molecule-inbound-token header;",
    "// answer no A2A request without it.",
    "const inboundToken = String(registered.inbound_token);",
    "for (;;) {",
    "  try {",
    '    const beat = await post("/registry/heartbeat", authToken, { workspace_id: WORKSPACE_ID });',
    '    console.log("heartbeat:", beat.status);',
    "  } catch (error) {",
    '    console.error("heartbeat failed:", error);',
    "  }",
    `  await new Promise((resolve) => setTimeout(resolve, ${interval * 1000}));`,
    "}",
    "",
  ].join("\n");
}

function cliSnippet(
  platformUrl: string,
  workspaceId: string,
  token: string,
  agentUrl: string | null,
): string {
  const lines = agentUrl
    ? []
    : [
        "# AGENT_URL: where the platform reaches this agent (https://…, or http://127.0.0.1:<port> on a local platform)",
      ];
  // A shell parameter expansion, spelled out so it is not read as a template placeholder.
  const url = agentUrl ? shellQuote(agentUrl) : `"$${"{"}AGENT_URL:?set AGENT_URL}"`;
  lines.push(
    "# Serves an echo agent, registers, heartbeats; the bearer token is kept in --state-dir for restarts.",
    "# The one-time token goes in the environment, not on the command line, where ps would show it to anyone.",
    `WORKSPACE_BOOT_TOKEN=${shellQuote(token)} \\`,
    `  npx molecule-agent run --platform ${shellQuote(platformUrl)} --workspace ${workspaceId} --url ${url}`,
    "",
  );
  return lines.join("\n");
}
