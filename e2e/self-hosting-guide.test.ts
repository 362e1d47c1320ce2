/**
 * The remote-agent flow as Molecule's self-hosting guide documents it, run as a new user runs it: bash, curl and jq
 * against a real platform process on PostgreSQL. The guide's two lines are kept verbatim (only its elided agent URL is
 * filled in); the calls after them are the register and heartbeat bodies the guide and its seeds document.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../test-support/pg.ts";
import {
  killAllPlatformProcesses,
  type PlatformProcess,
  startPlatformProcess,
} from "../test-support/process.ts";

const run = promisify(execFile);

/** Never called: an external agent's URL is only recorded until something talks to it over A2A. */
const AGENT_URL = "https://ci-agent.example.com:8443";

/** Verbatim from the guide, `…` included: the test puts the agent's URL where the guide elides it. */
const GUIDE_CREATE = `WORKSPACE=$(curl -s -X POST "\${PLATFORM_URL}/workspaces" -H "Authorization: Bearer \${ADMIN_TOKEN}" \\
  -H "Content-Type: application/json" -d '{"name": "CI Agent", "runtime": "external", "external": true, "url": "…"}')
WORKSPACE_ID=$(echo $WORKSPACE | jq -r '.id')`;

/**
 * What the agent does next, with the documented bodies: `{id, url, agent_card}`, then `{workspace_id}` with the load
 * fields agents written for Molecule send beside it (accepted and ignored).
 */
const REGISTER_AND_HEARTBEAT = `REGISTRATION_TOKEN=$(echo "$WORKSPACE" | jq -r '.connection.registration_token')
REGISTERED=$(curl -s -X POST "\${PLATFORM_URL}/registry/register" -H "Authorization: Bearer \${REGISTRATION_TOKEN}" \\
  -H "Content-Type: application/json" \\
  -d "{\\"id\\": \\"\${WORKSPACE_ID}\\", \\"url\\": \\"${AGENT_URL}\\", \\"agent_card\\": {\\"name\\": \\"CI Agent\\", \\"skills\\": []}}")
AUTH_TOKEN=$(echo "$REGISTERED" | jq -r '.auth_token')
curl -s -X POST "\${PLATFORM_URL}/registry/heartbeat" -H "Authorization: Bearer \${AUTH_TOKEN}" \\
  -H "Content-Type: application/json" \\
  -d "{\\"workspace_id\\": \\"\${WORKSPACE_ID}\\", \\"error_rate\\": 0, \\"sample_error\\": \\"\\", \\"active_tasks\\": 0, \\"uptime_seconds\\": 12}" >/dev/null`;

function script(...parts: string[]): string {
  return ["set -euo pipefail", ...parts].join("\n");
}

let database: TestDatabase;
let platform: PlatformProcess;

beforeAll(async () => {
  database = await createTestDatabase();
  // The production agent URL policy (https, public hosts): nothing is relaxed for the guide.
  platform = await startPlatformProcess({ env: { DATABASE_URL: database.url } });
});

afterAll(async () => {
  await killAllPlatformProcesses();
  await database?.drop();
});

async function bash(source: string): Promise<string> {
  const { stdout } = await run("bash", ["-c", source], {
    env: { PATH: process.env.PATH ?? "", PLATFORM_URL: platform.url, ADMIN_TOKEN: platform.adminToken },
  });
  return stdout;
}

describe("the self-hosting guide's remote-agent flow, run with curl and jq", () => {
  it("the create snippet gives the workspace id, as the guide expects", async () => {
    const created = GUIDE_CREATE.replace("…", AGENT_URL);
    const id = (await bash(script(created, 'echo "$WORKSPACE_ID"'))).trim();
    expect(id).toMatch(/^ws_/);
    const workspace = await platform.call("GET", `/workspaces/${id}`);
    expect(workspace.body).toMatchObject({ id, name: "CI Agent", runtime: "external", url: AGENT_URL });
  });

  it("then the agent registers with {id, url, agent_card}, gets auth_token and heartbeats with workspace_id", async () => {
    const created = GUIDE_CREATE.replace("…", AGENT_URL);
    const out = await bash(
      script(
        created,
        REGISTER_AND_HEARTBEAT,
        `curl -s "\${PLATFORM_URL}/workspaces/\${WORKSPACE_ID}" -H "Authorization: Bearer \${ADMIN_TOKEN}" | jq -r '[.id, .status, .url] | @tsv'`,
        'echo "$AUTH_TOKEN" | cut -c1-4',
      ),
    );
    const [line, tokenPrefix] = out.trim().split("\n");
    const [id, status, url] = (line ?? "").split("\t");
    expect(id).toMatch(/^ws_/);
    expect(status).toBe("online");
    expect(url).toBe(AGENT_URL);
    expect(tokenPrefix).not.toBe("null");
    const card = await platform.call("GET", `/workspaces/${id}`);
    expect(card.body.lastHeartbeatAt).not.toBeNull();
  });
});
