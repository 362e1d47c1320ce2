/**
 * Docker calls that can take long end as soon as their caller's signal fires (an operation abandoned at its
 * deadline): the signal reaches the engine request, so the call does not wait out the engine. On the real engine: a
 * stop whose process ignores its stop signal, with a grace period far longer than any test, is ended by the abort.
 */
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABELS } from "../naming.ts";
import { createDockerClient } from "./client.ts";
import { removeContainer, startContainer, stopContainer } from "./engine.ts";
import { ECHO_IMAGE, ensureTestImage, removeDeployment, type TestImage } from "./test-support.ts";

const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const docker = createDockerClient();
const deployment = `test-abort-${randomBytes(4).toString("hex")}`;
let image: TestImage;

beforeAll(async () => {
  image = await ensureTestImage(docker, repoRoot);
}, 600_000);
afterAll(() => removeDeployment(docker, deployment));

/** A running container whose main process ignores SIGUSR2, its stop signal: a stop waits out the whole grace period. */
async function stubbornContainer(): Promise<string> {
  const node = image === ECHO_IMAGE;
  const container = await docker.createContainer({
    name: `abort-${randomBytes(4).toString("hex")}`,
    Image: `${image.imagePrefix}${image.runtime}:${image.imageTag}`,
    Entrypoint: node ? ["node", "-e", "setInterval(() => {}, 1 << 30)"] : ["/sleep"],
    Cmd: [],
    StopSignal: "SIGUSR2",
    Labels: { [LABELS.deployment]: deployment },
    HostConfig: { NetworkMode: "none", Init: false },
  });
  await startContainer(docker, container.id);
  return container.id;
}

/**
 * Resolves once the engine has sent the container its stop signal, i.e. its stop is under way. Events from `since`
 * (unix seconds) on are replayed, so one sent before the watch began is seen too.
 */
async function stopSignalSent(containerId: string, since: number): Promise<void> {
  const events = (await docker.getEvents({
    since,
    filters: { container: [containerId], event: ["kill"] },
  })) as NodeJS.ReadableStream & { destroy(): void };
  await new Promise<void>((resolve) => {
    events.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString("utf8").split("\n")) {
        // The engine names the signal by number: SIGUSR2 is 12 on Linux.
        if (line.trim() && JSON.parse(line).Actor?.Attributes?.signal === "12") {
          events.destroy();
          resolve();
        }
      }
    });
  });
}

describe("docker calls under an abort signal", () => {
  it("a stop waiting out a 10-minute grace period ends with a retryable timeout when its signal fires", async () => {
    const id = await stubbornContainer();
    const abandon = new AbortController();
    const since = Math.floor(Date.now() / 1000) - 1;
    const stopping = stopContainer(docker, id, 600, abandon.signal);
    await stopSignalSent(id, since);
    abandon.abort(new Error("deadline passed"));
    await expect(stopping).rejects.toMatchObject({ code: "timeout", retryable: true });
    // The engine was still waiting for the process: the container runs, untouched by a kill.
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(true);
    await removeContainer(docker, id);
  });

  it("a call whose signal has already fired does not reach the engine", async () => {
    const id = await stubbornContainer();
    const abandon = new AbortController();
    abandon.abort(new Error("deadline passed"));
    await expect(removeContainer(docker, id, abandon.signal)).rejects.toMatchObject({
      code: "timeout",
      retryable: true,
    });
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(true);
    await removeContainer(docker, id);
  });
});
