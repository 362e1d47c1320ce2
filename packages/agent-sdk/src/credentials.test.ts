import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PlatformClient } from "./client.ts";
import { CredentialManager, CredentialStore, CredentialsError, defaultStateDir } from "./credentials.ts";
import type { LogFields } from "./log.ts";
import { FakePlatform } from "./testing/fake-platform.ts";

const platform = new FakePlatform();
beforeAll(() => platform.start());
afterAll(() => platform.stop());

let dir = "";
beforeEach(async () => {
  dir = join(await mkdtemp(join(tmpdir(), "agent-sdk-creds-")), "state");
});
afterEach(async () => {
  await rm(join(dir, ".."), { recursive: true, force: true });
});

const noSleep = async () => {};

function manager(
  workspaceId: string,
  opts: { bootToken?: string; authToken?: string; inboundToken?: string; store?: boolean } = {},
) {
  const events: [string, LogFields | undefined][] = [];
  const sleeps: number[] = [];
  const m = new CredentialManager({
    client: new PlatformClient({ platformUrl: platform.url, workspaceId }),
    store: opts.store === false ? null : new CredentialStore(dir),
    bootToken: opts.bootToken,
    authToken: opts.authToken,
    inboundToken: opts.inboundToken,
    registration: () => ({ url: "http://127.0.0.1:4000", agentCard: { name: "t" } }),
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 1,
    log: (_level, event, fields) => events.push([event, fields]),
  });
  return { m, events, sleeps };
}

describe("defaultStateDir", () => {
  it("uses WORKSPACE_STATE_DIR, else /workspace/.molecule", () => {
    expect(defaultStateDir({ WORKSPACE_STATE_DIR: "/tmp/x" })).toBe("/tmp/x");
    expect(defaultStateDir({ WORKSPACE_STATE_DIR: "" })).toBe("/workspace/.molecule");
    expect(defaultStateDir({})).toBe("/workspace/.molecule");
  });
});

describe("CredentialStore", () => {
  it("writes 0600 in a 0700 directory, atomically, and reads back per workspace", async () => {
    const store = new CredentialStore(dir);
    await store.save({ workspaceId: "ws_a", authToken: "tok_1", platformUrl: "http://p" });
    await store.save({ workspaceId: "ws_a", authToken: "tok_2", platformUrl: "http://p" });
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(store.fileFor("ws_a"))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["credentials-ws_a.json"]); // no temporary file left behind
    expect(await store.load("ws_a")).toMatchObject({ workspaceId: "ws_a", authToken: "tok_2" });
    expect(await store.load("ws_b")).toBeNull();
    await store.clear("ws_a");
    expect(await store.load("ws_a")).toBeNull();
  });

  it("keeps the inbound token beside the auth token; a file written before inbound tokens loads with none", async () => {
    const store = new CredentialStore(dir);
    await store.save({
      workspaceId: "ws_a",
      authToken: "tok_1",
      inboundToken: "in_1",
      platformUrl: "http://p",
    });
    expect(await store.load("ws_a")).toMatchObject({ authToken: "tok_1", inboundToken: "in_1" });
    await writeFile(store.fileFor("ws_a"), JSON.stringify({ workspaceId: "ws_a", authToken: "tok_0" }));
    expect(await store.load("ws_a")).toMatchObject({ authToken: "tok_0", inboundToken: null });
  });

  it("ignores a corrupt or foreign file instead of failing", async () => {
    const store = new CredentialStore(dir);
    await store.save({ workspaceId: "ws_a", authToken: "t", platformUrl: "" });
    await writeFile(store.fileFor("ws_a"), "{not json");
    expect(await store.load("ws_a")).toBeNull();
    await writeFile(store.fileFor("ws_a"), JSON.stringify({ workspaceId: "ws_other", authToken: "t" }));
    expect(await store.load("ws_a")).toBeNull();
  });

  it("keeps odd workspace ids inside the directory", () => {
    const file = new CredentialStore(dir).fileFor("../../etc/passwd");
    expect(file.startsWith(`${dir}/credentials-`)).toBe(true);
    expect(file.slice(dir.length + 1)).not.toContain("/");
  });
});

describe("CredentialManager", () => {
  it("registers once, then a restarted agent with the spent boot token re-uses the stored token", async () => {
    const boot = platform.addWorkspace("ws_restart", { K: "v" });
    const first = manager("ws_restart", { bootToken: boot });
    const token = await first.m.acquire();
    expect(first.m.source).toBe("registered");
    expect(platform.workspace("ws_restart").url).toBe("http://127.0.0.1:4000");
    const inbound = platform.workspace("ws_restart").inboundToken;
    expect(first.m.inboundToken).toBe(inbound);
    const saved = await readFile(new CredentialStore(dir).fileFor("ws_restart"), "utf8");
    expect(JSON.parse(saved)).toMatchObject({
      workspaceId: "ws_restart",
      authToken: token,
      inboundToken: inbound,
    });

    const second = manager("ws_restart", { bootToken: boot }); // same, already spent, boot token
    expect(await second.m.acquire()).toBe(token);
    expect(second.m.source).toBe("stored");
    expect(second.m.inboundToken).toBe(inbound);
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_restart" });
    expect(await second.m.withToken(undefined, (t) => client.pullSecrets(t))).toEqual({ K: "v" });
    expect(platform.workspace("ws_restart").registrations).toBe(1);
  });

  it("with persistInBackground, hands out the registered token while the store still writes it", async () => {
    const boot = platform.addWorkspace("ws_background", { K: "v" });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    // A disk that takes its time: the write ends only when the test says so.
    class SlowStore extends CredentialStore {
      override async save(...args: Parameters<CredentialStore["save"]>): Promise<void> {
        await held;
        return super.save(...args);
      }
    }
    const m = new CredentialManager({
      client: new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_background" }),
      store: new SlowStore(dir),
      bootToken: boot,
      registration: () => ({ url: null, agentCard: {} }),
    });
    const token = await m.acquire(undefined, { persistInBackground: true });
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_background" });
    expect(await m.withToken(undefined, (t) => client.pullSecrets(t))).toEqual({ K: "v" });
    let written = false;
    const persisted = m.persisted().then(() => {
      written = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(written).toBe(false);
    expect(await new CredentialStore(dir).load("ws_background")).toBeNull();
    release();
    await persisted;
    expect(await new CredentialStore(dir).load("ws_background")).toMatchObject({ authToken: token });
  });

  it("trades a stored token from before inbound tokens for a registration when a fresh boot token is at hand", async () => {
    const boot = platform.addWorkspace("ws_upgrade", { K: "v" });
    const first = manager("ws_upgrade", { bootToken: boot });
    const oldToken = await first.m.acquire();
    // As an agent that registered before the platform issued inbound tokens left it.
    const store = new CredentialStore(dir);
    await store.save({ workspaceId: "ws_upgrade", authToken: oldToken, platformUrl: platform.url });

    // Restarted with the boot token already spent: the stored token goes on, without an inbound token.
    const spent = manager("ws_upgrade", { bootToken: boot });
    expect(await spent.m.acquire()).toBe(oldToken);
    expect([spent.m.source, spent.m.inboundToken]).toEqual(["stored", null]);

    // Restarted with a fresh one: it registers and gets one.
    const fresh = platform.reissueBootToken("ws_upgrade");
    const upgraded = manager("ws_upgrade", { bootToken: fresh });
    expect(await upgraded.m.acquire()).toBe(platform.workspace("ws_upgrade").authToken);
    expect(upgraded.m.source).toBe("registered");
    expect(upgraded.m.inboundToken).toBe(platform.workspace("ws_upgrade").inboundToken);
    expect((await store.load("ws_upgrade"))?.inboundToken).toBe(upgraded.m.inboundToken);
  });

  it("replaces a rejected stored token by registering with a new boot token", async () => {
    const boot = platform.addWorkspace("ws_renew", { K: "v" });
    await manager("ws_renew", { bootToken: boot }).m.acquire();
    const firstInbound = platform.workspace("ws_renew").inboundToken;
    platform.revokeAuthToken("ws_renew");
    const fresh = platform.reissueBootToken("ws_renew");

    const { m } = manager("ws_renew", { bootToken: fresh });
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_renew" });
    expect(await m.withToken(undefined, (t) => client.pullSecrets(t))).toEqual({ K: "v" });
    expect(m.source).toBe("registered");
    expect(platform.workspace("ws_renew").registrations).toBe(2);
    expect(await new CredentialStore(dir).load("ws_renew")).toMatchObject({
      authToken: platform.workspace("ws_renew").authToken,
      inboundToken: platform.workspace("ws_renew").inboundToken,
    });
    // A new registration, a new inbound token: the old one is of no use any more.
    expect(m.inboundToken).toBe(platform.workspace("ws_renew").inboundToken);
    expect(m.inboundToken).not.toBe(firstInbound);
  });

  it("fails clearly when the stored token is rejected and the boot token is spent", async () => {
    const boot = platform.addWorkspace("ws_dead");
    await manager("ws_dead", { bootToken: boot }).m.acquire();
    platform.revokeAuthToken("ws_dead");

    const { m } = manager("ws_dead", { bootToken: boot });
    const client = new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_dead" });
    const err = await m.withToken(undefined, (t) => client.pullSecrets(t)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as CredentialsError).code).toBe("boot_token_rejected");
    expect((err as Error).message).toMatch(/issue a new boot token/);
    expect(await new CredentialStore(dir).load("ws_dead")).toBeNull(); // the dead token is forgotten
  });

  it("fails with no_credentials when there is neither a stored token nor a boot token", async () => {
    platform.addWorkspace("ws_none");
    const err = await manager("ws_none")
      .m.acquire()
      .catch((e: unknown) => e);
    expect((err as CredentialsError).code).toBe("no_credentials");
    expect((err as Error).message).toContain("WORKSPACE_BOOT_TOKEN");
  });

  it("prefers an explicit auth token and cannot renew it without a boot token", async () => {
    const boot = platform.addWorkspace("ws_explicit");
    const token = await manager("ws_explicit", { bootToken: boot, store: false }).m.acquire();
    const inboundToken = platform.workspace("ws_explicit").inboundToken ?? "missing";
    const { m } = manager("ws_explicit", { authToken: token, inboundToken, store: false });
    expect(await m.acquire()).toBe(token);
    expect(m.source).toBe("explicit");
    expect(m.inboundToken).toBe(inboundToken);
    await expect(m.renew()).rejects.toMatchObject({ code: "token_rejected" });
  });

  it("retries register with growing delays while the platform answers 5xx", async () => {
    const boot = platform.addWorkspace("ws_retry");
    platform.failNext("register", 503, 502, 500, 429);
    const { m, sleeps, events } = manager("ws_retry", { bootToken: boot });
    await m.acquire();
    expect(sleeps).toEqual([500, 1000, 2000, 4000]);
    expect(events.filter(([e]) => e === "register_retry")).toHaveLength(4);
    expect(platform.workspace("ws_retry").registrations).toBe(1);
  });

  it("does not retry a rejected boot token", async () => {
    const boot = platform.addWorkspace("ws_spent");
    await manager("ws_spent", { bootToken: boot, store: false }).m.acquire();
    const { m, sleeps } = manager("ws_spent", { bootToken: boot });
    await expect(m.acquire()).rejects.toMatchObject({ code: "boot_token_rejected" });
    expect(sleeps).toEqual([]);
  });

  it("stops retrying when aborted while the platform is unreachable", async () => {
    const controller = new AbortController();
    const m = new CredentialManager({
      client: new PlatformClient({ platformUrl: "http://127.0.0.1:9", workspaceId: "ws_x" }),
      store: null,
      bootToken: "boot",
      registration: () => ({ url: null, agentCard: {} }),
      sleep: async () => {
        controller.abort();
      },
    });
    await expect(m.acquire(controller.signal)).rejects.toMatchObject({ name: "AbortError" });
  });

  it("keeps working in memory when the state directory is not writable", async () => {
    const boot = platform.addWorkspace("ws_ro");
    await writeFile(join(dir, "..", "file"), "x");
    const events: string[] = [];
    const m = new CredentialManager({
      client: new PlatformClient({ platformUrl: platform.url, workspaceId: "ws_ro" }),
      store: new CredentialStore(join(dir, "..", "file", "sub")),
      bootToken: boot,
      registration: () => ({ url: null, agentCard: {} }),
      sleep: noSleep,
      log: (_l, e) => events.push(e),
    });
    expect(await m.acquire()).toBe(platform.workspace("ws_ro").authToken);
    expect(events).toContain("credentials_not_persisted");
  });

  it("never logs the tokens", async () => {
    const boot = platform.addWorkspace("ws_log");
    platform.failNext("register", 503);
    const { m, events } = manager("ws_log", { bootToken: boot });
    const token = await m.acquire();
    const text = JSON.stringify(events);
    expect(text).not.toContain(token);
    expect(text).not.toContain(boot);
    expect(text).not.toContain(m.inboundToken ?? "missing");
  });
});
