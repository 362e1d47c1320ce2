/**
 * Test helpers for the docker backend: the workspace image to run and cleanup by deployment label.
 * Not part of the package's exports.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type Dockerode from "dockerode";
import { LABELS } from "../naming.ts";

const run = promisify(execFile);

export interface TestImage {
  imagePrefix: string;
  imageTag: string;
  runtime: string;
}

export const ECHO_IMAGE: TestImage = {
  imagePrefix: "molecule/workspace-",
  imageTag: "latest",
  runtime: "echo",
};
/** A throwaway image (a static binary that waits for SIGTERM), used only while the echo image cannot be built. */
export const SLEEP_IMAGE: TestImage = {
  imagePrefix: "molecule-test/workspace-",
  imageTag: "latest",
  runtime: "sleep",
};

const imageName = (image: TestImage) => `${image.imagePrefix}${image.runtime}:${image.imageTag}`;

async function present(docker: Dockerode, image: TestImage): Promise<boolean> {
  try {
    await docker.getImage(imageName(image)).inspect();
    return true;
  } catch {
    return false;
  }
}

async function buildSleepImage(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "molecule-sleep-image-"));
  try {
    const source = join(dir, "sleep.c");
    await writeFile(
      source,
      "#include <signal.h>\n#include <stdlib.h>\n#include <unistd.h>\n" +
        "static void bye(int s){(void)s;_exit(0);}\n" +
        "int main(void){signal(SIGTERM,bye);signal(SIGINT,bye);for(;;)pause();}\n",
    );
    await run("mkdir", ["-p", join(dir, "rootfs/workspace"), join(dir, "rootfs/tmp")]);
    await run("cc", ["-static", "-Os", "-o", join(dir, "rootfs/sleep"), source]);
    await run("tar", ["-C", join(dir, "rootfs"), "-cf", join(dir, "rootfs.tar"), "."]);
    await run("docker", [
      "import",
      "--change",
      'CMD ["/sleep"]',
      join(dir, "rootfs.tar"),
      imageName(SLEEP_IMAGE),
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The image docker tests run: `molecule/workspace-echo:latest`, built once with `infra/build-workspace-image.sh`
 * when absent; before that script exists, a throwaway sleep image made with `cc -static` and `docker import`.
 */
export async function ensureTestImage(docker: Dockerode, repoRoot: string): Promise<TestImage> {
  if (await present(docker, ECHO_IMAGE)) return ECHO_IMAGE;
  const script = join(repoRoot, "infra/build-workspace-image.sh");
  if (existsSync(script)) {
    await run("bash", [script], { cwd: repoRoot, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
    if (await present(docker, ECHO_IMAGE)) return ECHO_IMAGE;
    throw new Error(`${script} ran but ${imageName(ECHO_IMAGE)} is still missing`);
  }
  if (!(await present(docker, SLEEP_IMAGE))) await buildSleepImage();
  return SLEEP_IMAGE;
}

/** Removes every container and volume labelled with `deployment`. */
export async function removeDeployment(docker: Dockerode, deployment: string): Promise<void> {
  const filters = { label: [`${LABELS.deployment}=${deployment}`] };
  for (const container of await docker.listContainers({ all: true, filters })) {
    await docker
      .getContainer(container.Id)
      .remove({ force: true })
      .catch(() => {});
  }
  const { Volumes } = await docker.listVolumes({ filters });
  for (const volume of Volumes ?? []) {
    await docker
      .getVolume(volume.Name)
      .remove()
      .catch(() => {});
  }
}

/**
 * A stand-in Docker engine on 127.0.0.1 for what the real one will not do: it answers every request with `answer`
 * (default: a redirect to `location`) and keeps each request it received, so a test can say the engine was never
 * asked, or never asked twice. `GET /_ping` answers 200 as the real engine does.
 */
export interface FakeEngine {
  url: string;
  port: number;
  /** `METHOD path` of every request received, in order. */
  requests: string[];
  /** Where the next redirects point; any string, as a hostile or broken engine might send. */
  location: string;
  close(): Promise<void>;
}

export async function startFakeEngine(): Promise<FakeEngine> {
  const requests: string[] = [];
  const engine = { requests, location: "http://unresolvable.invalid/" } as FakeEngine;
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.url?.endsWith("/_ping")) {
      res.writeHead(200, { "content-type": "text/plain" }).end("OK");
      return;
    }
    res.writeHead(301, { location: engine.location, "content-type": "application/json" });
    res.end(JSON.stringify({ message: "moved" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  engine.port = typeof address === "object" && address ? address.port : 0;
  engine.url = `http://127.0.0.1:${engine.port}`;
  engine.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return engine;
}
