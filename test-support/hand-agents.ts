import { messageText, type StartedA2AServer, startA2AServer } from "@molecule/agent-sdk";
import type { TestPlatform } from "./platform.ts";
import { waitFor } from "./wait.ts";

/**
 * Agents for a platform whose backend runs no agent code (the fake backend, the Fly emulator): SDK A2A servers in the
 * test process, registered by hand with the admin token, heartbeating through `beating` as an agent's loop would.
 */
export class HandAgents {
  private readonly servers: StartedA2AServer[] = [];
  private readonly inbound = new Map<string, string>();
  private readonly loops: Array<() => void> = [];

  constructor(private readonly platform: TestPlatform) {}

  /**
   * Registers workspace `id` at a new echo agent (`<name>: <text>`, after `before` resolves when given) and heartbeats
   * it online; answers its token.
   */
  async register(
    id: string,
    name: string,
    before: () => Promise<void> = async () => undefined,
  ): Promise<{ id: string; token: string }> {
    const server = await startA2AServer({
      host: "127.0.0.1",
      port: 0,
      card: { name, description: `${name} echoes`, skills: [] },
      inbound: () => {
        const token = this.inbound.get(url);
        return token ? { token } : "pending";
      },
      onMessage: async (message) => {
        await before();
        return { parts: [{ kind: "text", text: `${name}: ${messageText(message)}` }] };
      },
    });
    this.servers.push(server);
    const url = `http://127.0.0.1:${server.port}/`;
    const registered = await this.platform.call("POST", "/registry/register", { body: { id, url } });
    if (registered.status !== 200) throw new Error(`register ${id}: ${JSON.stringify(registered.body)}`);
    this.inbound.set(url, registered.body.inbound_token);
    const token = registered.body.auth_token as string;
    // Reporting activity starts its idle time on the platform's clock (a test clock may be ahead of the database's).
    const beat = await this.platform.call("POST", "/registry/heartbeat", {
      token,
      body: { workspace_id: id, active: true },
    });
    if (beat.body.status !== "online") throw new Error(`heartbeat ${id}: ${JSON.stringify(beat.body)}`);
    return { id, token };
  }

  /**
   * The agent's heartbeat loop, every 50 ms until `stopBeating`: it brings a started workspace back online. `alive`
   * says whether the agent's machine runs (an agent in a suspended machine sends nothing); default always.
   */
  beating(ws: { id: string; token: string }, alive: () => Promise<boolean> = async () => true): void {
    let stopped = false;
    const loop = async () => {
      while (!stopped) {
        if (await alive().catch(() => false)) {
          await this.platform
            .call("POST", "/registry/heartbeat", { token: ws.token, body: { workspace_id: ws.id } })
            .catch(() => undefined);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    void loop();
    this.loops.push(() => {
      stopped = true;
    });
  }

  stopBeating(): void {
    for (const stop of this.loops.splice(0)) stop();
  }

  async close(): Promise<void> {
    this.stopBeating();
    await Promise.all(this.servers.map((server) => server.close()));
  }
}

/** Waits for the workspace's status (a listening platform's runner runs its operations). */
export function workspaceStatusBecomes(platform: TestPlatform, id: string, status: string) {
  return waitFor(`${id} to be ${status}`, async () => {
    const view = (await platform.call("GET", `/workspaces/${id}`)).body;
    return view.status === status ? view : undefined;
  });
}
