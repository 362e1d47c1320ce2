/**
 * Test-only preload that makes one workspace's operation a poison operation: loaded with
 * `node --import tsx --import test-support/poison.ts <main>` (spawnPlatform's `imports`), it watches undici's
 * diagnostics channel, and when an outgoing request's path names the workspace id in
 * MOLECULE_TEST_POISON_WORKSPACE_ID it throws from a setImmediate callback: outside any handler, so the process
 * exits in the middle of the attempt, as the Docker client once did when a redirect sent it into a failing DNS
 * lookup. Nothing in the services knows of it; without the variable it does nothing.
 */
import { subscribe } from "node:diagnostics_channel";

const workspaceId = process.env.MOLECULE_TEST_POISON_WORKSPACE_ID;

if (workspaceId) {
  subscribe("undici:request:create", (message) => {
    const { request } = message as { request: { origin?: string; path: string } };
    if (!request.path.includes(workspaceId)) return;
    setImmediate(() => {
      throw new Error(`poison: a backend request for ${workspaceId} (${request.path})`);
    });
  });
}
