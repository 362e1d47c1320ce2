import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { createIdGenerator } from "@molecule/contracts";
import type Dockerode from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeProvisioner } from "../conformance.ts";
import { ProvisionerError } from "../errors.ts";
import { LABELS, resourceName } from "../naming.ts";
import type { Provisioner, WorkspaceSpec } from "../provisioner.ts";
import { tierLimits } from "../tiers.ts";
import { createDockerClient } from "./client.ts";
import { agentEnv, createDockerProvisioner, type DockerHandle, type DockerLogger } from "./provisioner.ts";
import { ensureTestImage, removeDeployment, type TestImage } from "./test-support.ts";

const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const docker = createDockerClient();
const deployment = `test-${randomBytes(4).toString("hex")}`;
const ids = createIdGenerator();
let imagePromise: Promise<TestImage> | undefined;
const testImage = () => {
  imagePromise ??= ensureTestImage(docker, repoRoot);
  return imagePromise;
};

function makeSpecFor(image: TestImage) {
  return (overrides: Partial<WorkspaceSpec> = {}): WorkspaceSpec => {
    const workspaceId = overrides.workspaceId ?? ids.next("ws");
    return {
      workspaceId,
      orgId: ids.next("org"),
      deployment,
      runtime: image.runtime,
      tier: 2,
      env: {
        WORKSPACE_ID: workspaceId,
        PLATFORM_URL: "http://127.0.0.1:9",
        WORKSPACE_BOOT_TOKEN: `boot-${randomBytes(8).toString("hex")}`,
        AGENT_PORT: "0",
      },
      secretKeys: [],
      metadata: {},
      ...overrides,
    };
  };
}

function recordingLogger() {
  const lines: Array<{ level: string; fields: Record<string, unknown>; message: string }> = [];
  const at =
    (level: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      lines.push({ level, fields, message });
    };
  const logger: DockerLogger = { info: at("info"), warn: at("warn"), error: at("error") };
  return { logger, lines };
}

/** Docker with `createContainer` failing once when armed: a provision that dies after making the volume. */
function faultyDocker(real: Dockerode) {
  let armed = false;
  const proxy = new Proxy(real, {
    get(target, prop) {
      if (prop === "createContainer" && armed) {
        armed = false;
        return async () => {
          throw Object.assign(new Error("injected create failure"), { statusCode: 500 });
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const arm = (): void => {
    armed = true;
  };
  return { docker: proxy, arm };
}

afterAll(async () => {
  await removeDeployment(docker, deployment);
});

describeProvisioner("docker", async () => {
  const image = await testImage();
  const faulty = faultyDocker(docker);
  return {
    provisioner: createDockerProvisioner({
      docker: faulty.docker,
      deployment,
      imagePrefix: image.imagePrefix,
      imageTag: image.imageTag,
      network: "host",
      pullTimeoutMs: 15_000,
    }),
    makeSpec: makeSpecFor(image),
    faults: { failNextProvisionPartway: faulty.arm },
    runningTimeoutMs: 20_000,
  };
});

function tarOf(name: string, content: string): Buffer {
  const dir = execFileSync("mktemp", ["-d"]).toString().trim();
  execFileSync("sh", ["-c", 'printf "%s" "$2" > "$1/$0"', name, dir, content]);
  const tar = execFileSync("tar", ["-C", dir, "-cf", "-", name]);
  execFileSync("rm", ["-rf", dir]);
  return tar;
}

async function readFileFrom(container: Dockerode.Container, path: string): Promise<string> {
  const stream = await container.getArchive({ path });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return execFileSync("tar", ["-xOf", "-"], { input: Buffer.concat(chunks) }).toString();
}

describe("agentEnv", () => {
  it("binds agents on the host's network to loopback, whatever the spec says, and addresses them elsewhere", () => {
    const id = ids.next("ws");
    const env = { WORKSPACE_ID: id, AGENT_HOST: "0.0.0.0", AGENT_PORT: "0" };
    expect(agentEnv("host", id, env)).toEqual({ ...env, AGENT_HOST: "127.0.0.1" });
    expect(agentEnv("molecule", id, { WORKSPACE_ID: id })).toEqual({
      WORKSPACE_ID: id,
      AGENT_PUBLIC_URL: `http://${resourceName(id)}:8000`,
    });
    // Docker's default bridge: nothing to add; the agent picks its own URL.
    expect(agentEnv("bridge", id, { WORKSPACE_ID: id })).toEqual({ WORKSPACE_ID: id });
  });
});

describe("docker backend specifics", () => {
  let image: TestImage;
  let provisioner: Provisioner;
  let makeSpec: (overrides?: Partial<WorkspaceSpec>) => WorkspaceSpec;
  const log = recordingLogger();

  beforeAll(async () => {
    image = await testImage();
    makeSpec = makeSpecFor(image);
    provisioner = createDockerProvisioner({
      docker,
      deployment,
      imagePrefix: image.imagePrefix,
      imageTag: image.imageTag,
      network: "host",
      pullTimeoutMs: 15_000,
      logger: log.logger,
    });
  });

  it("creates the container with tier limits, labels, env, no privileges and no docker socket", async () => {
    const secret = `s3cr3t-${randomBytes(6).toString("hex")}`;
    const spec = makeSpec({ tier: 3, secretKeys: ["API_KEY"] });
    spec.env.API_KEY = secret;
    const handle = (await provisioner.provision(spec, null)) as DockerHandle;
    const info = await docker.getContainer(resourceName(spec.workspaceId)).inspect();
    expect(info.Id).toBe(handle.containerId);
    expect(info.Name).toBe(`/${resourceName(spec.workspaceId)}`);
    expect(info.Config.Image).toBe(`${image.imagePrefix}${image.runtime}:${image.imageTag}`);
    // the container's labels are the image's own plus exactly ours
    const imageLabels = (await docker.getImage(info.Config.Image).inspect()).Config.Labels ?? {};
    const added = Object.fromEntries(
      Object.entries(info.Config.Labels).filter(([key]) => !(key in imageLabels)),
    );
    expect(added).toEqual({
      [LABELS.managed]: "true",
      [LABELS.workspaceId]: spec.workspaceId,
      [LABELS.orgId]: spec.orgId,
      [LABELS.deployment]: deployment,
    });
    expect(JSON.stringify(info.Config.Labels)).not.toContain(secret);
    expect(JSON.stringify(info.Config.Labels)).not.toContain(spec.env.WORKSPACE_BOOT_TOKEN);
    for (const [key, value] of Object.entries(spec.env)) expect(info.Config.Env).toContain(`${key}=${value}`);
    // On the host's network the agent is told to listen on loopback only.
    expect(info.Config.Env).toContain("AGENT_HOST=127.0.0.1");

    const limits = tierLimits(3);
    const ncpu = ((await docker.info()) as { NCPU: number }).NCPU;
    const host = info.HostConfig;
    expect(host.Memory).toBe(limits.memoryMb * 1024 * 1024);
    expect(host.NanoCpus).toBe(Math.min(limits.cpus, ncpu) * 1e9);
    expect(host.PidsLimit).toBe(limits.pidsLimit);
    expect(host.Privileged).toBe(false);
    expect(host.CapDrop).toEqual(["ALL"]);
    expect(host.CapAdd ?? []).toEqual([]);
    expect(host.SecurityOpt).toEqual(["no-new-privileges"]);
    expect(host.NetworkMode).toBe("host");
    expect(host.PidMode ?? "").toBe("");
    expect(host.IpcMode).toBe("private");
    expect(Object.keys(host.PortBindings ?? {})).toEqual([]);
    expect(host.Binds ?? []).toEqual([]);
    expect(info.Mounts).toHaveLength(1);
    expect(info.Mounts[0]).toMatchObject({
      Type: "volume",
      Name: handle.volumeName,
      Destination: "/workspace",
    });
    expect(JSON.stringify(info.Mounts)).not.toContain("docker.sock");

    const volume = await docker.getVolume(handle.volumeName).inspect();
    expect(volume.Labels).toMatchObject({
      [LABELS.workspaceId]: spec.workspaceId,
      [LABELS.deployment]: deployment,
    });

    const logged = JSON.stringify(log.lines);
    expect(logged).toContain("docker: creating container");
    expect(logged).toContain("API_KEY=[redacted]");
    expect(logged).toContain("WORKSPACE_BOOT_TOKEN=[redacted]");
    expect(logged).not.toContain(secret);
    expect(logged).not.toContain(spec.env.WORKSPACE_BOOT_TOKEN);
    expect(logged).toContain(`WORKSPACE_ID=${spec.workspaceId}`);
    await provisioner.destroy({ ...spec, handle });
  });

  it("reports its steps in order and adopts on a second provision", async () => {
    const spec = makeSpec();
    const steps: string[] = [];
    const first = await provisioner.provision(spec, null, { step: (name) => steps.push(name) });
    expect(steps).toEqual(["image_ready", "volume_ready", "container_created", "container_started"]);
    const details: Array<string | undefined> = [];
    const second = await provisioner.provision(spec, first, {
      step: (_name, detail) => details.push(detail),
    });
    expect(second).toEqual(first);
    expect(details[2]).toBe(`adopted ${(first as DockerHandle).containerId}`);
    await provisioner.destroy({ ...spec, handle: first });
  });

  it("never takes a volume or container under its name that is not this workspace's", async () => {
    const foreignVolume = makeSpec();
    const name = resourceName(foreignVolume.workspaceId);
    // Same name, the labels of another workspace of the deployment.
    await docker.createVolume({
      Name: name,
      Labels: { [LABELS.workspaceId]: "ws_someoneelse", [LABELS.deployment]: deployment },
    });
    const volumeError = await provisioner.provision(foreignVolume, null).catch((e: unknown) => e);
    expect(volumeError).toMatchObject({ code: "conflict", retryable: false });
    expect((volumeError as Error).message).toContain(`a volume named ${name}`);
    await expect(docker.getContainer(name).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect((await docker.getVolume(name).inspect()).Labels).toEqual({
      [LABELS.workspaceId]: "ws_someoneelse",
      [LABELS.deployment]: deployment,
    });
    await docker.getVolume(name).remove();

    const foreignContainer = makeSpec();
    const taken = resourceName(foreignContainer.workspaceId);
    const stranger = await docker.createContainer({
      name: taken,
      Image: `${image.imagePrefix}${image.runtime}:${image.imageTag}`,
      Labels: { [LABELS.deployment]: deployment },
      HostConfig: { NetworkMode: "none" },
    });
    try {
      const containerError = await provisioner.provision(foreignContainer, null).catch((e: unknown) => e);
      expect(containerError).toMatchObject({ code: "conflict", retryable: false });
      expect((containerError as Error).message).toContain(`a container named ${taken}`);
      expect((await stranger.inspect()).State.Status).toBe("created");
    } finally {
      await stranger.remove({ force: true });
    }
  });

  it("converges under heavy concurrency: 8 provisions, then stops and destroys racing", async () => {
    const spec = makeSpec();
    const handles = await Promise.all(Array.from({ length: 8 }, () => provisioner.provision(spec, null)));
    expect(new Set(handles.map((h) => (h as DockerHandle).containerId)).size).toBe(1);
    const filters = { label: [`${LABELS.workspaceId}=${spec.workspaceId}`] };
    expect(await docker.listContainers({ all: true, filters })).toHaveLength(1);
    expect((await docker.listVolumes({ filters })).Volumes).toHaveLength(1);
    const ref = { ...spec, handle: null };
    await Promise.all([provisioner.stop(ref), provisioner.stop(ref), provisioner.suspend(ref)]);
    expect((await provisioner.status(ref)).state).toBe("stopped");
    await Promise.all([provisioner.destroy(ref), provisioner.destroy(ref), provisioner.destroy(ref)]);
    expect(await docker.listContainers({ all: true, filters })).toHaveLength(0);
    expect((await docker.listVolumes({ filters })).Volumes ?? []).toHaveLength(0);
  });

  it("keeps volume data across stop/start and across a lost container", async () => {
    const spec = makeSpec();
    const handle = (await provisioner.provision(spec, null)) as DockerHandle;
    const marker = `data-${randomBytes(6).toString("hex")}`;
    await docker
      .getContainer(handle.containerId)
      .putArchive(tarOf("marker.txt", marker), { path: "/workspace" });

    await provisioner.stop({ ...spec, handle });
    expect((await provisioner.status({ ...spec, handle })).state).toBe("stopped");
    const restarted = (await provisioner.start(spec, handle)) as DockerHandle;
    expect(restarted.containerId).toBe(handle.containerId);
    expect((await provisioner.status({ ...spec, handle })).state).toBe("running");
    expect(await readFileFrom(docker.getContainer(restarted.containerId), "/workspace/marker.txt")).toBe(
      marker,
    );

    // the container disappears behind our back: start recreates it on the same volume
    await docker.getContainer(handle.containerId).remove({ force: true });
    expect((await provisioner.status({ ...spec, handle })).state).toBe("missing");
    const recreated = (await provisioner.start(spec, handle)) as DockerHandle;
    expect(recreated.containerId).not.toBe(handle.containerId);
    expect(recreated.volumeName).toBe(handle.volumeName);
    expect((await provisioner.status({ ...spec, handle: recreated })).state).toBe("running");
    expect(await readFileFrom(docker.getContainer(recreated.containerId), "/workspace/marker.txt")).toBe(
      marker,
    );
    await provisioner.destroy({ ...spec, handle: recreated });
    await expect(docker.getVolume(handle.volumeName).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it("reports a container whose process died as stopped with its exit code", async () => {
    const spec = makeSpec();
    const handle = (await provisioner.provision(spec, null)) as DockerHandle;
    await docker.getContainer(handle.containerId).kill({ signal: "SIGKILL" });
    const status = await provisioner.status({ ...spec, handle });
    expect(status.state).toBe("stopped");
    expect(status.detail).toMatch(/exited with code 137/);
    await provisioner.destroy({ ...spec, handle });
  });

  it("writes each resource's audit intent before the engine has it and claims it after; none for a missing image", async () => {
    // An audit that holds rows as the tenant's table does, noting whether the engine already had the resource when
    // its intent was written (it must not: the intent is what lets a crash between create and claim be found).
    const rows = new Map<string, { state: string; providerId: string | null; existedAtIntent: boolean }>();
    const exists = (kind: string, name: string) =>
      (kind === "volume" ? docker.getVolume(name) : docker.getContainer(name)).inspect().then(
        () => true,
        () => false,
      );
    const audit = {
      intent: async (kind: string, name: string) => {
        rows.set(`${kind}:${name}`, {
          state: "intent",
          providerId: null,
          existedAtIntent: await exists(kind, name),
        });
      },
      claim: async (kind: string, name: string, providerId: string) => {
        const row = rows.get(`${kind}:${name}`);
        rows.set(`${kind}:${name}`, {
          state: "claimed",
          providerId,
          existedAtIntent: row?.existedAtIntent ?? true,
        });
      },
    };
    const spec = makeSpec();
    const handle = (await provisioner.provision(spec, null, { audit })) as DockerHandle;
    const name = resourceName(spec.workspaceId);
    expect(Object.fromEntries(rows)).toEqual({
      [`volume:${name}`]: { state: "claimed", providerId: handle.volumeName, existedAtIntent: false },
      [`container:${name}`]: { state: "claimed", providerId: handle.containerId, existedAtIntent: false },
    });
    await provisioner.destroy({ ...spec, handle });

    rows.clear();
    const missing = makeSpec({ runtime: "doesnotexist" });
    await expect(provisioner.provision(missing, null, { audit })).rejects.toMatchObject({
      code: "image_unavailable",
    });
    expect(rows.size).toBe(0);
  });

  it("fails fast with image_unavailable for a missing image and creates nothing", async () => {
    const spec = makeSpec({ runtime: "doesnotexist" });
    const started = Date.now();
    const error = await provisioner.provision(spec, null).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProvisionerError);
    expect(error).toMatchObject({ code: "image_unavailable", retryable: false });
    expect((error as Error).message).toContain(`${image.imagePrefix}doesnotexist:${image.imageTag}`);
    expect((error as Error).message).toMatch(/could not be pulled: \S/);
    expect(Date.now() - started).toBeLessThan(20_000);
    const mine = (await provisioner.listManaged()).filter((r) => r.workspaceId === spec.workspaceId);
    expect(mine).toEqual([]);
  });

  it("asks the engine for an image only until it has found it; one removed since is asked for (and pulled) again", async () => {
    // A tag of the test image that only this test uses, so it can be removed.
    const prefix = `molecule-test/seen-${randomBytes(3).toString("hex")}-`;
    const source = docker.getImage(`${image.imagePrefix}${image.runtime}:${image.imageTag}`);
    await source.tag({ repo: `${prefix}${image.runtime}`, tag: image.imageTag });
    const inspected: string[] = [];
    const counting = new Proxy(docker, {
      get(target, prop) {
        if (prop === "getImage")
          return (name: string) => {
            const got = target.getImage(name);
            return new Proxy(got, {
              get(imageTarget, imageProp) {
                if (imageProp === "inspect") inspected.push(name);
                const value = Reflect.get(imageTarget, imageProp, imageTarget);
                return typeof value === "function" ? value.bind(imageTarget) : value;
              },
            });
          };
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const seeing = createDockerProvisioner({
      docker: counting,
      deployment,
      imagePrefix: prefix,
      imageTag: image.imageTag,
      network: "host",
      pullTimeoutMs: 15_000,
    });
    const steps = () => {
      const names: string[] = [];
      return { names, step: (name: string, detail?: string) => void names.push(`${name}: ${detail ?? ""}`) };
    };
    const first = makeSpec();
    await seeing.destroy({ ...first, handle: await seeing.provision(first, null) });
    expect(inspected).toHaveLength(1);
    const second = makeSpec();
    const secondSteps = steps();
    await seeing.destroy({
      ...second,
      handle: await seeing.provision(second, null, { step: secondSteps.step }),
    });
    expect(inspected).toHaveLength(1);
    expect(secondSteps.names[0]).toMatch(/^image_ready: .* present$/);

    await docker.getImage(`${prefix}${image.runtime}:${image.imageTag}`).remove();
    const third = makeSpec();
    await expect(seeing.provision(third, null)).rejects.toMatchObject({ code: "image_unavailable" });
    expect(inspected).toHaveLength(2);
    await seeing.destroy({ ...third, handle: null });
    const left = (await seeing.listManaged()).filter((r) => r.workspaceId === third.workspaceId);
    expect(left).toEqual([]);
  });

  it("bounds a pull that never finishes by pullTimeoutMs, and by the caller's signal", async () => {
    // an engine whose pull stream never ends (a registry that accepts the connection and goes silent)
    const silentPull = new Proxy(docker, {
      get(target, prop) {
        if (prop === "pull") return async () => new PassThrough();
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const slow = createDockerProvisioner({
      docker: silentPull,
      deployment,
      imagePrefix: "molecule-test/never-",
      imageTag: "latest",
      network: "host",
      pullTimeoutMs: 300,
    });
    let started = Date.now();
    const error = await slow.provision(makeSpec({ runtime: "there" }), null).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "image_unavailable", retryable: false });
    expect((error as Error).message).toMatch(/molecule-test\/never-there:latest.*timed out/);
    expect(Date.now() - started).toBeLessThan(3_000);

    const patient = createDockerProvisioner({
      docker: silentPull,
      deployment,
      imagePrefix: "molecule-test/never-",
      imageTag: "latest",
      network: "host",
      pullTimeoutMs: 60_000,
    });
    started = Date.now();
    await expect(
      patient.provision(makeSpec({ runtime: "there" }), null, { signal: AbortSignal.timeout(200) }),
    ).rejects.toMatchObject({ code: "timeout", retryable: true });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("refuses to adopt a container of the same name that belongs to another deployment, without naming its owner", async () => {
    const spec = makeSpec();
    const name = resourceName(spec.workspaceId);
    const otherOrg = ids.next("org");
    const foreign = await docker.createContainer({
      name,
      Image: `${image.imagePrefix}${image.runtime}:${image.imageTag}`,
      Labels: {
        [LABELS.deployment]: `${deployment}-other`,
        [LABELS.workspaceId]: spec.workspaceId,
        [LABELS.orgId]: otherOrg,
      },
    });
    try {
      const provisionError = await provisioner.provision(spec, null).catch((e: unknown) => e);
      expect(provisionError).toMatchObject({ code: "conflict", retryable: false });
      await expect(provisioner.destroy({ ...spec, handle: null })).rejects.toMatchObject({
        code: "conflict",
      });
      expect((await foreign.inspect()).Id).toBeTruthy();
      const status = await provisioner.status({ ...spec, handle: null });
      expect(status.state).toBe("unknown");
      for (const text of [(provisionError as Error).message, status.detail ?? ""]) {
        expect(text).toContain(`a container named ${name} exists`);
        expect(text).not.toContain(`${deployment}-other`);
        expect(text).not.toContain(otherOrg);
      }
    } finally {
      await foreign.remove({ force: true });
    }
  });

  it("rejects a spec of another deployment", async () => {
    await expect(provisioner.provision(makeSpec({ deployment: "elsewhere" }), null)).rejects.toMatchObject({
      code: "invalid_spec",
    });
  });

  it("lists only this deployment's resources", async () => {
    const spec = makeSpec();
    const handle = (await provisioner.provision(spec, null)) as DockerHandle;
    const other = createDockerProvisioner({
      docker,
      deployment: `${deployment}-x`,
      imagePrefix: image.imagePrefix,
      imageTag: image.imageTag,
      network: "host",
    });
    const listed = await provisioner.listManaged();
    expect(listed).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: "container", id: handle.containerId, workspaceId: spec.workspaceId }),
        expect.objectContaining({ kind: "volume", id: handle.volumeName, orgId: spec.orgId }),
      ]),
    );
    expect((await other.listManaged()).filter((r) => r.workspaceId === spec.workspaceId)).toEqual([]);
    await provisioner.destroy({ ...spec, handle });
  });

  it("maps an unreachable engine to retryable backend_unavailable, and status to unknown", async () => {
    const broken = createDockerProvisioner({
      docker: createDockerClient({ socketPath: "/nonexistent/docker.sock" }),
      deployment,
      imagePrefix: image.imagePrefix,
      imageTag: image.imageTag,
      network: "host",
    });
    const spec = makeSpec();
    await expect(broken.provision(spec, null)).rejects.toMatchObject({
      code: "backend_unavailable",
      retryable: true,
    });
    await expect(broken.listManaged()).rejects.toMatchObject({ code: "backend_unavailable" });
    const status = await broken.status({ ...spec, handle: null });
    expect(status.state).toBe("unknown");
    expect(status.detail).toMatch(/unreachable/);
  });
});
