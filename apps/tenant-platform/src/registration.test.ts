import { RegisterResponse } from "@molecule/contracts";
import { workspaceSecrets, workspaces } from "@molecule/db";
import { createFakeProvisioner, type FakeProvisioner } from "@molecule/provisioner-core/fake";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, type TestPlatform } from "../../../test-support/platform.ts";

// What a registration answers and what it counts as: the agent registering with its boot token gets its secrets in the
// answer and is online at once (its registration is its first heartbeat); the admin gets neither; a secret that
// cannot be opened leaves the registration standing and the secrets to the agent's own pull, which says why.

let platform: TestPlatform;
let fake: FakeProvisioner;

beforeAll(async () => {
  fake = createFakeProvisioner();
  platform = await createTestPlatform(fake);
});
afterAll(() => platform.close());

const register = (token: string | null, body: Record<string, unknown>) =>
  platform.call("POST", "/registry/register", { token, body });

const row = async (id: string) => {
  const [found] = await platform.deps.db.select().from(workspaces).where(eq(workspaces.id, id));
  if (!found) throw new Error(`no workspace ${id}`);
  return found;
};

/** An external workspace with these secrets, and its one-time registration token. */
async function external(secrets: Record<string, string>) {
  const created = await platform.call("POST", "/workspaces", {
    body: { name: "remote", external: true, secrets },
  });
  expect(created.status).toBe(202);
  return {
    id: created.body.workspace.id as string,
    bootToken: created.body.connection.registration_token as string,
  };
}

/** The events published for a workspace while `during` runs, as `type:from->to` (status) or `type`. */
async function eventsDuring(id: string, during: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const subscription = platform.deps.events.subscribe({ workspaceId: id }, (event) => {
    const data = event.data as { from?: string; to?: string };
    seen.push(event.type === "workspace.status" ? `${event.type}:${data.from}->${data.to}` : event.type);
  });
  try {
    await during();
  } finally {
    subscription.unsubscribe();
  }
  return seen;
}

describe("registering with the boot token", () => {
  it("answers with the secrets and counts as the first heartbeat: online, with a heartbeat time, no beat needed", async () => {
    const { id, bootToken } = await external({ MODEL_API_KEY: "sk-registered-1", OTHER: "two\nlines" });
    let answer: Awaited<ReturnType<typeof register>> | undefined;
    const before = platform.clock.now().getTime();
    const events = await eventsDuring(id, async () => {
      answer = await register(bootToken, { id });
    });
    expect(answer?.status).toBe(200);
    const body = RegisterResponse.parse(answer?.body);
    expect(body.secrets).toEqual({ MODEL_API_KEY: "sk-registered-1", OTHER: "two\nlines" });
    expect(body.status).toBe("online");
    expect(events).toContain("workspace.status:awaiting_agent->online");
    expect(events).toContain("workspace.heartbeat");

    const stored = await row(id);
    expect(stored.status).toBe("online");
    expect(stored.lastHeartbeatAt?.getTime()).toBeGreaterThanOrEqual(before);
    expect(stored.lastHeartbeatAt?.getTime()).toBeLessThanOrEqual(platform.clock.now().getTime());
    expect((await platform.call("GET", `/workspaces/${id}`)).body.status).toBe("online");
    // The values went to the agent only: not to the log.
    expect(platform.logs.join("\n")).not.toContain("sk-registered-1");

    // Its next heartbeat is the steady state (answered from memory, buffered), and the token is the one answered.
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: body.auth_token,
      body: { workspace_id: id },
    });
    expect(beat.body.status).toBe("online");
  });

  it("is a heartbeat for the liveness sweep too: silence after it takes the workspace offline", async () => {
    const { id, bootToken } = await external({});
    const answer = await register(bootToken, { id });
    expect(answer.body).toMatchObject({ status: "online", secrets: {} });
    await platform.sweeper.markStale();
    expect((await row(id)).status).toBe("online");

    platform.clock.advance(platform.deps.settings.staleAfterMs + 1_000);
    await platform.sweeper.markStale();
    const after = await row(id);
    expect(after.status).toBe("offline");
    expect(after.statusReason).toContain("no heartbeat");
  });

  it("moves a managed workspace online from awaiting its agent, as its first heartbeat did", async () => {
    const created = await platform.call("POST", "/workspaces", {
      body: { name: "managed", runtime: "echo", secrets: { MANAGED_KEY: "managed-value" } },
    });
    const id: string = created.body.workspace.id;
    await platform.runner.drain();
    expect((await row(id)).status).toBe("awaiting_agent");
    const bootToken = fake.inspect(id)?.instance?.env.WORKSPACE_BOOT_TOKEN ?? null;
    const answer = await register(bootToken, { id });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: "online", secrets: { MANAGED_KEY: "managed-value" } });
    expect((await row(id)).status).toBe("online");
  });

  it("still registers when a secret cannot be opened: no secrets in the answer, not online, the pull says why", async () => {
    const { id, bootToken } = await external({ READABLE: "fine-value", BROKEN: "sealed-elsewhere" });
    // Sealed with a key version this process does not have (as after a key rotation that dropped the old key).
    await platform.deps.db
      .update(workspaceSecrets)
      .set({ keyVersion: 9 })
      .where(eq(workspaceSecrets.key, "BROKEN"));

    const answer = await register(bootToken, { id });
    expect(answer.status).toBe(200);
    const body = RegisterResponse.parse(answer.body);
    expect(body).not.toHaveProperty("secrets");
    expect(body.status).toBe("awaiting_agent");
    expect(JSON.stringify(answer.body)).not.toContain("fine-value");
    const stored = await row(id);
    expect(stored.status).toBe("awaiting_agent");
    expect(stored.lastHeartbeatAt).toBeNull();
    // The boot token is spent all the same.
    expect((await register(bootToken, { id })).status).toBe(401);

    const pulled = await platform.call("GET", `/workspaces/${id}/secrets/values`, { token: body.auth_token });
    expect(pulled.status).toBe(503);
    expect(pulled.body.error.code).toBe("secrets_key_unavailable");
    expect(pulled.body.error.message).toContain(`secret BROKEN of workspace ${id}`);
    expect(pulled.body.error.message).toContain("key version 9");
    expect(platform.logs.join("\n")).toContain("registered without its secrets");

    // Its first heartbeat brings it online, as before.
    const beat = await platform.call("POST", "/registry/heartbeat", {
      token: body.auth_token,
      body: { workspace_id: id },
    });
    expect(beat.body.status).toBe("online");
    expect(platform.logs.join("\n")).not.toContain("fine-value");
  });
});

describe("registering with the admin token", () => {
  it("carries no secrets and moves nothing: the agent is not the one calling", async () => {
    const { id } = await external({ ADMIN_MUST_NOT_SEE: "sk-not-for-admin" });
    // `call` sends the admin token when given none.
    const answer = await platform.call("POST", "/registry/register", { body: { id } });
    expect(answer.status).toBe(200);
    const body = RegisterResponse.parse(answer.body);
    expect(body).not.toHaveProperty("secrets");
    expect(body.status).toBe("awaiting_agent");
    expect(JSON.stringify(answer.body)).not.toContain("sk-not-for-admin");
    const stored = await row(id);
    expect(stored.status).toBe("awaiting_agent");
    expect(stored.lastHeartbeatAt).toBeNull();
  });
});
