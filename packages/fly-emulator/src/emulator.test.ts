import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type FlyEmulator, startFlyEmulator } from "./emulator.ts";
import { OpenApiValidator } from "./openapi.ts";

const validator = OpenApiValidator.fromFile();
let emu: FlyEmulator;

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await request(`${emu.url}/v1${path}`, {
    method: method as "GET",
    headers: { authorization: `Bearer ${emu.token}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  return {
    status: res.statusCode,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined,
  };
}

async function createMachine(name = "ws-a", extra: Record<string, unknown> = {}) {
  const res = await call("POST", "/apps/app/machines", {
    name,
    region: "ord",
    config: {
      image: "registry/x:1",
      guest: { cpu_kind: "shared", cpus: 1, memory_mb: 512 },
      metadata: { k: name },
    },
    ...extra,
  });
  expect(res.status).toBe(200);
  return res.body as { id: string; state: string; region: string };
}

beforeEach(async () => {
  emu = await startFlyEmulator({
    apps: ["app"],
    validator,
    delays: { bootMs: 4, stopMs: 2, suspendMs: 2, destroyMs: 2 },
    waitCapMs: 50,
  });
});
afterEach(async () => {
  await emu.close();
  expect(emu.violations).toEqual([]);
});

describe("fly emulator", () => {
  it("the OpenAPI document is found and compiles", () => {
    expect(validator.match("GET", "/apps/x/machines/y/wait")?.operationId).toBe("Machines_wait");
    expect(() => OpenApiValidator.fromFile("/nonexistent/machines-openapi.json")).toThrow();
  });

  it("rejects missing or wrong bearer tokens with 401", async () => {
    const res = await request(`${emu.url}/v1/apps/app`, { headers: { authorization: "Bearer nope" } });
    expect(res.statusCode).toBe(401);
    expect(await res.body.json()).toEqual({ error: expect.any(String) });
  });

  it("answers a malformed escape in the path with 400 and keeps serving", async () => {
    const res = await call("GET", "/apps/app/machines/%E0%A4%A");
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: "invalid URL escape in the path" });
    expect((await call("GET", "/apps/app/machines")).status).toBe(200);
    // A path no document operation matches is the client's mistake, so the validator records it.
    expect(new Set(emu.violations)).toEqual(
      new Set(["GET /apps/app/machines/%E0%A4%A: no such operation in the OpenAPI document"]),
    );
    emu.violations.length = 0;
  });

  it("creates, waits, stops, suspends, starts and destroys a machine through the state machine", async () => {
    const m = await createMachine();
    expect(m.state).toBe("created");
    const waited = await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=5`);
    expect(waited).toMatchObject({ status: 200, body: { ok: true, state: "started" } });
    expect((await call("POST", `/apps/app/machines/${m.id}/suspend`)).status).toBe(200);
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=suspended&timeout=5`)).status).toBe(200);
    expect((await call("POST", `/apps/app/machines/${m.id}/start`)).status).toBe(200);
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=5`)).status).toBe(200);
    expect((await call("POST", `/apps/app/machines/${m.id}/start`)).status).toBe(412);
    expect((await call("DELETE", `/apps/app/machines/${m.id}`)).status).toBe(412);
    expect((await call("DELETE", `/apps/app/machines/${m.id}?force=true`)).status).toBe(200);
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=destroyed&timeout=5`)).status).toBe(200);
    expect(emu.machines("app")).toEqual([]);
    expect((await call("DELETE", `/apps/app/machines/${m.id}?force=true`)).status).toBe(404);
  });

  it("answers 408 deadline_exceeded when the wait runs out", async () => {
    const m = await createMachine("ws-b", { skip_launch: true });
    const res = await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=1`);
    expect(res.status).toBe(408);
    expect(String(res.body?.error)).toMatch(/^deadline_exceeded/);
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=61`)).status).toBe(400);
  });

  it("422 when a name is taken, 404 for unknown machines and apps", async () => {
    await createMachine("ws-c");
    const dup = await call("POST", "/apps/app/machines", { name: "ws-c", config: { image: "x:1" } });
    expect(dup.status).toBe(422);
    expect((await call("GET", "/apps/app/machines/nope")).status).toBe(404);
    expect((await call("GET", "/apps/other/machines")).status).toBe(404);
  });

  it("filters machines by metadata", async () => {
    await createMachine("ws-d");
    await createMachine("ws-e");
    const res = await call("GET", "/apps/app/machines?metadata.k=ws-e");
    expect((res.body as unknown as { name: string }[]).map((m) => m.name)).toEqual(["ws-e"]);
  });

  it("leases: 409 for another holder, mutations need the nonce, release frees it", async () => {
    const m = await createMachine("ws-f");
    const lease = await call("POST", `/apps/app/machines/${m.id}/lease`, { ttl: 30 });
    expect(lease.status).toBe(201);
    const nonce = (lease.body?.data as { nonce: string }).nonce;
    expect((await call("POST", `/apps/app/machines/${m.id}/lease`, { ttl: 30 })).status).toBe(409);
    await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=5`);
    expect((await call("POST", `/apps/app/machines/${m.id}/stop`)).status).toBe(409);
    const stop = await call("POST", `/apps/app/machines/${m.id}/stop`, undefined, {
      "fly-machine-lease-nonce": nonce,
    });
    expect(stop.status).toBe(200);
    const release = await call("DELETE", `/apps/app/machines/${m.id}/lease`, undefined, {
      "fly-machine-lease-nonce": nonce,
    });
    expect(release.status).toBe(200);
    expect((await call("POST", `/apps/app/machines/${m.id}/lease`, { ttl: 30 })).status).toBe(201);
  });

  it("create with skip_launch, then update under a lease: the new config boots as a new version", async () => {
    const m = (await createMachine("ws-u", { skip_launch: true })) as unknown as {
      id: string;
      state: string;
      instance_id: string;
    };
    expect(m.state).toBe("created");
    const lease = await call("POST", `/apps/app/machines/${m.id}/lease`, { ttl: 30 });
    const config = {
      image: "registry/x:2",
      env: { AGENT_PUBLIC_URL: `http://${m.id}.vm.app.internal:8000` },
    };
    // Someone without the nonce cannot update a machine another holds.
    expect((await call("POST", `/apps/app/machines/${m.id}`, { config })).status).toBe(409);
    const nonce = { "fly-machine-lease-nonce": (lease.body?.data as { nonce: string }).nonce };
    expect(
      (await call("POST", `/apps/app/machines/${m.id}`, { name: "renamed", config }, nonce)).status,
    ).toBe(400);
    const updated = await call("POST", `/apps/app/machines/${m.id}`, { config }, nonce);
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ id: m.id, state: "starting", config });
    expect(updated.body?.instance_id).not.toBe(m.instance_id);
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=5`)).status).toBe(200);
    const release = await call("DELETE", `/apps/app/machines/${m.id}/lease`, undefined, nonce);
    expect(release.status).toBe(200);

    // A started machine restarts on its new config; skip_launch leaves a stopped one stopped.
    const restarted = await call("POST", `/apps/app/machines/${m.id}`, { config: { image: "registry/x:3" } });
    expect(restarted.body?.state).toBe("stopping");
    expect((await call("GET", `/apps/app/machines/${m.id}/wait?state=started&timeout=5`)).status).toBe(200);
    await call("POST", `/apps/app/machines/${m.id}/stop`);
    await call("GET", `/apps/app/machines/${m.id}/wait?state=stopped&timeout=5`);
    const kept = await call("POST", `/apps/app/machines/${m.id}`, { config, skip_launch: true });
    expect(kept.body?.state).toBe("stopped");
    expect(emu.machines("app").find((machine) => machine.id === m.id)?.config).toEqual(config);
    expect((await call("POST", "/apps/app/machines/nope", { config })).status).toBe(404);
  });

  it("a machine in a transition refuses an update with 412", async () => {
    await emu.close();
    // Boots that take a minute: the machine stays `starting` for the whole test.
    emu = await startFlyEmulator({ apps: ["app"], validator, delays: { bootMs: 60_000 } });
    const m = await createMachine("ws-t", { skip_launch: true });
    expect((await call("POST", `/apps/app/machines/${m.id}/start`)).status).toBe(200);
    const refused = await call("POST", `/apps/app/machines/${m.id}`, { config: { image: "registry/x:2" } });
    expect(refused.status).toBe(412);
    expect(String(refused.body?.error)).toMatch(/^failed_precondition/);
    expect(emu.machines("app")[0]?.config.image).toBe("registry/x:1");
  });

  it("volumes: create, attach, refuse deletion while attached, delete after the machine is gone", async () => {
    const vol = await call("POST", "/apps/app/volumes", { name: "ws_vol", region: "ord", size_gb: 1 });
    expect(vol.status).toBe(200);
    const id = String(vol.body?.id);
    const m = await createMachine("ws-g", {
      config: { image: "x:1", mounts: [{ volume: id, path: "/workspace" }] },
    });
    expect((await call("DELETE", `/apps/app/volumes/${id}`)).status).toBe(412);
    await call("DELETE", `/apps/app/machines/${m.id}?force=true`);
    await call("GET", `/apps/app/machines/${m.id}/wait?state=destroyed&timeout=5`);
    expect((await call("DELETE", `/apps/app/volumes/${id}`)).status).toBe(200);
    expect((await call("DELETE", `/apps/app/volumes/${id}`)).status).toBe(404);
    expect(
      (await call("POST", "/apps/app/volumes", { name: "Bad-Name", region: "ord", size_gb: 1 })).status,
    ).toBe(400);
  });

  it("injects 429 with Retry-After, 5xx, capacity errors and dropped connections", async () => {
    emu.inject({ operation: "Machines_list", kind: "status", status: 429, retryAfter: "2" });
    emu.inject({ operation: "Machines_list", kind: "status", status: 503 });
    const limited = await call("GET", "/apps/app/machines");
    expect(limited.status).toBe(429);
    expect(limited.headers["retry-after"]).toBe("2");
    expect((await call("GET", "/apps/app/machines")).status).toBe(503);
    expect((await call("GET", "/apps/app/machines")).status).toBe(200);

    emu.setCapacity("ord", false);
    const full = await call("POST", "/apps/app/machines", {
      name: "ws-h",
      region: "ord",
      config: { image: "x:1" },
    });
    expect(full).toMatchObject({ status: 412, body: { status: "insufficient_capacity" } });
    emu.setCapacity("ord", true);

    emu.inject({ operation: "Machines_create", kind: "drop-after" });
    await expect(createMachine("ws-i")).rejects.toThrow();
    expect(emu.machines("app").map((m) => m.name)).toEqual(["ws-i"]);
    expect(emu.requestCounts().Machines_create).toBe(2);
  });

  it("rate-limits actions per machine when configured", async () => {
    await emu.close();
    emu = await startFlyEmulator({
      apps: ["app"],
      validator,
      rateLimit: { perSecond: 1, burst: 1, getPerSecond: 5, getBurst: 2, retryAfterSeconds: 1 },
    });
    const m = await createMachine("ws-j");
    expect((await call("GET", `/apps/app/machines/${m.id}`)).status).toBe(200);
    expect((await call("GET", `/apps/app/machines/${m.id}`)).status).toBe(200);
    const limited = await call("GET", `/apps/app/machines/${m.id}`);
    expect(limited).toMatchObject({ status: 429, body: { error: "rate limit exceeded" } });
    expect(limited.headers["retry-after"]).toBe("1");
  });

  it("records schema violations of requests", async () => {
    await call("POST", "/apps/app/volumes", { name: "ws_x", region: "ord", size_gb: "1" });
    expect(emu.violations.some((v) => v.includes("size_gb"))).toBe(true);
    emu.violations.length = 0;
  });
});
