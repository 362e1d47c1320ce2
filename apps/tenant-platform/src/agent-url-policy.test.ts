import type { LookupAddress } from "node:dns";
import { createFakeProvisioner } from "@molecule/provisioner-core/fake";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestPlatform, errorOf, type TestPlatform } from "../../../test-support/platform.ts";
import { loadConfig } from "./config.ts";
import {
  checkAgentUrl,
  guardedLookup,
  isBlockedAddress,
  isPrivateAddressError,
  type Resolver,
} from "./services/agent-url-policy.ts";

const STRICT = { allowInsecure: false, allowPrivate: false };
const OPEN = { allowInsecure: true, allowPrivate: true };

/** Never asks real DNS: `rebind.test` answers loopback, `public.test` a public address. */
const resolver: Resolver = async (host) => {
  const table: Record<string, LookupAddress[]> = {
    "rebind.test": [{ address: "127.0.0.1", family: 4 }],
    "public.test": [{ address: "93.184.216.34", family: 4 }],
  };
  const found = table[host];
  if (!found) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: "ENOTFOUND" });
  return found;
};

describe("blocked address ranges", () => {
  it.each([
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.5",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:a9fe:a9fe",
    "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe",
  ])("refuses %s", (address) => {
    expect(isBlockedAddress(address)).toBe(true);
  });

  it.each([
    "93.184.216.34",
    "8.8.8.8",
    "172.32.0.1",
    "172.15.255.255",
    "100.128.0.1",
    "169.255.0.1",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
  ])("accepts %s", (address) => {
    expect(isBlockedAddress(address)).toBe(false);
  });
});

describe("checkAgentUrl", () => {
  it("wants https, allowing http only for loopback and only when insecure URLs are allowed", () => {
    expect(checkAgentUrl("https://agent.example.com/", STRICT)).toBeNull();
    expect(checkAgentUrl("http://agent.example.com/", STRICT)).toMatch(/https/);
    expect(checkAgentUrl("http://example.com/", OPEN)).toMatch(/loopback/);
    expect(checkAgentUrl("http://127.0.0.1:8000/", STRICT)).toMatch(/ALLOW_INSECURE_AGENT_URLS/);
    expect(checkAgentUrl("http://127.0.0.1:8000/", { allowInsecure: true, allowPrivate: false })).toMatch(
      /private/,
    );
    expect(checkAgentUrl("http://127.0.0.1:8000/", OPEN)).toBeNull();
    expect(checkAgentUrl("http://[::1]:8000/", OPEN)).toBeNull();
    expect(checkAgentUrl("http://localhost:8000/", OPEN)).toBeNull();
    expect(checkAgentUrl("ftp://agent.example.com/", OPEN)).toMatch(/https/);
    expect(checkAgentUrl("file:///etc/passwd", OPEN)).toMatch(/https/);
    expect(checkAgentUrl("https://user:pw@agent.example.com/", OPEN)).toMatch(/credentials/);
  });

  it("refuses private, link-local, metadata and mapped literals unless private networks are allowed", () => {
    for (const url of [
      "https://169.254.169.254/",
      "https://10.0.0.5/",
      "https://192.168.0.10/",
      "https://[::1]/",
      "https://[fe80::1]/",
      "https://[fc00::1]/",
      "https://[::ffff:127.0.0.1]/",
      "https://[::ffff:169.254.169.254]/",
      "https://metadata.google.internal/",
      "https://localhost/",
    ]) {
      expect(checkAgentUrl(url, STRICT), url).toMatch(/private/);
      expect(checkAgentUrl(url, OPEN), url).toBeNull();
    }
  });
});

describe("connect-time lookup", () => {
  function lookup(policy: typeof STRICT, host: string) {
    return new Promise<{ err: unknown; address: unknown }>((resolve) =>
      guardedLookup(policy, resolver)(host, { all: true }, (err, address) => resolve({ err, address })),
    );
  }

  it("refuses a name that resolves to a blocked address, and lets public ones through", async () => {
    const refused = await lookup(STRICT, "rebind.test");
    expect(isPrivateAddressError(refused.err)).toBe(true);
    const allowed = await lookup(STRICT, "public.test");
    expect(allowed.err).toBeNull();
    expect(allowed.address).toEqual([{ address: "93.184.216.34", family: 4 }]);
    const open = await lookup(OPEN, "rebind.test");
    expect(open.err).toBeNull();
  });
});

describe("config defaults", () => {
  it("allows private and insecure agent URLs by default only with the docker backend", () => {
    expect(loadConfig({}).agentUrls).toEqual({ allowInsecure: true, allowPrivate: true });
    expect(loadConfig({ CONTAINER_BACKEND: "docker" }).agentUrls).toEqual({
      allowInsecure: true,
      allowPrivate: true,
    });
    expect(
      loadConfig({ CONTAINER_BACKEND: "flyio", FLY_API_TOKEN: "fly", FLY_WORKSPACE_APP: "app" }).agentUrls,
    ).toEqual({
      allowInsecure: false,
      allowPrivate: false,
    });
    expect(
      loadConfig({ MOLECULE_ORG_ID: "org_1", CP_TENANT_TOKEN: "cpt", PROVISION_SHARED_SECRET: "key" })
        .agentUrls,
    ).toEqual({
      allowInsecure: false,
      allowPrivate: false,
    });
    expect(
      loadConfig({ ALLOW_INSECURE_AGENT_URLS: "false", ALLOW_PRIVATE_AGENT_URLS: "false" }).agentUrls,
    ).toEqual({ allowInsecure: false, allowPrivate: false });
    expect(() => loadConfig({ ALLOW_PRIVATE_AGENT_URLS: "yes" })).toThrow(/ALLOW_PRIVATE_AGENT_URLS/);
  });
});

describe("POST /registry/register and the A2A proxy", () => {
  let platform: TestPlatform;

  beforeAll(async () => {
    platform = await createTestPlatform(
      createFakeProvisioner(),
      { allowInsecureAgentUrls: false, allowPrivateAgentUrls: false },
      { resolveAgentHost: resolver },
    );
  });
  afterAll(async () => {
    await platform?.close();
  });

  async function workspace(name: string): Promise<string> {
    const created = await platform.call("POST", "/workspaces", { body: { name, runtime: "echo" } });
    expect(created.status).toBe(202);
    await platform.runner.drain();
    return created.body.workspace.id as string;
  }

  it("refuses http to a non-loopback host and private literals with 400, accepts them when allowed", async () => {
    const id = await workspace("policy");
    for (const url of ["http://example.com/", "https://169.254.169.254/", "https://10.0.0.5"]) {
      platform.deps.settings.allowInsecureAgentUrls = false;
      platform.deps.settings.allowPrivateAgentUrls = false;
      const refused = await platform.call("POST", "/registry/register", { body: { id, url } });
      expect(refused.status, url).toBe(400);
      expect(refused.body.error.code).toBe("bad_request");
      expect(refused.body.error.message).toMatch(/https|private/);
    }
    platform.deps.settings.allowInsecureAgentUrls = true;
    platform.deps.settings.allowPrivateAgentUrls = true;
    for (const url of ["https://169.254.169.254/", "https://10.0.0.5", "http://127.0.0.1:9/"]) {
      const accepted = await platform.call("POST", "/registry/register", { body: { id, url } });
      expect(accepted.status, url).toBe(200);
    }
    // http:// to a public name stays refused even when both are allowed: insecure is for loopback only.
    const refused = await platform.call("POST", "/registry/register", {
      body: { id, url: "http://example.com/" },
    });
    expect(refused.status).toBe(400);
    platform.deps.settings.allowInsecureAgentUrls = false;
    platform.deps.settings.allowPrivateAgentUrls = false;
  });

  it("refuses at connect time a name that passed at register time but resolves to loopback", async () => {
    const id = await workspace("rebind");
    const registered = await platform.call("POST", "/registry/register", {
      body: { id, url: "https://rebind.test/" },
    });
    expect(registered.status).toBe(200);
    const token = registered.body.auth_token as string;
    const beat = await platform.call("POST", "/registry/heartbeat", { token, body: { workspace_id: id } });
    expect(beat.body.status).toBe("online");

    const sent = await platform.call("POST", `/workspaces/${id}/a2a`, {
      body: {
        jsonrpc: "2.0",
        id: 1,
        method: "message/send",
        params: { message: { role: "user", messageId: "m-1", parts: [{ kind: "text", text: "hi" }] } },
      },
    });
    expect(sent.status).toBe(502);
    expect(errorOf(sent)).toMatchObject({
      code: "bad_gateway",
      message: "agent URL resolves to a private address",
    });
  });
});
