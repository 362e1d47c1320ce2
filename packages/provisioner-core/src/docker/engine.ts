/**
 * Docker engine operations shared by everything that runs containers on the local engine (the workspace backend
 * here, the control plane's tenant backend): idempotent start/stop/remove, a bounded image pull, and the mapping from
 * a container's state to a RuntimeStatus. Each maps engine failures to ProvisionerError. Each takes the caller's
 * signal and hands it to the engine request (docker-modem aborts the HTTP request), so a call whose operation was
 * abandoned (a stop waiting out a long grace period, a pull, a removal waiting for a concurrent one) ends at once
 * with a retryable `timeout` instead of running on.
 */
import type Dockerode from "dockerode";
import { ProvisionerError } from "../errors.ts";
import type { RuntimeStatus } from "../provisioner.ts";
import { pauseUnlessAborted } from "../retry.ts";
import { dockerErrorClass, dockerReason, dockerStatusCode, toProvisionerError } from "./errors.ts";

/** pino-compatible: fields first, then the message. */
export interface DockerLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export const noopDockerLogger: DockerLogger = { info() {}, warn() {}, error() {} };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Ends a docker lifecycle call whose caller gave up on it (its operation was abandoned) with a retryable timeout. */
export function throwIfAborted(signal: AbortSignal | undefined, op: string): void {
  if (signal?.aborted) {
    throw new ProvisionerError("timeout", `docker ${op} aborted`, true, {
      reason: signal.reason instanceof Error ? signal.reason.message : String(signal.reason),
    });
  }
}

/**
 * Runs a docker call, mapping its failure; `ok` lists status codes that count as success (returns undefined). With a
 * `signal`, `fn` gets it to pass to dockerode as `abortSignal`; once it fires the call ends with a retryable `timeout`.
 */
export async function dockerCall<T>(
  op: string,
  fn: (abortSignal: AbortSignal | undefined) => Promise<T>,
  ok: number[] = [],
  signal?: AbortSignal,
): Promise<T | undefined> {
  throwIfAborted(signal, op);
  try {
    return await fn(signal);
  } catch (error) {
    throwIfAborted(signal, op);
    const status = dockerStatusCode(error);
    if (status !== undefined && ok.includes(status)) return undefined;
    throw toProvisionerError(op, error);
  }
}

/** The container's details, or undefined when no container has that name or id. */
export function inspectContainer(
  docker: Dockerode,
  nameOrId: string,
): Promise<Dockerode.ContainerInspectInfo | undefined> {
  return dockerCall("inspect container", () => docker.getContainer(nameOrId).inspect(), [404]);
}

/** Starts a container; already running (or started by a concurrent call) is success. */
export async function startContainer(
  docker: Dockerode,
  nameOrId: string,
  signal?: AbortSignal,
): Promise<void> {
  throwIfAborted(signal, "start container");
  try {
    await docker.getContainer(nameOrId).start({ abortSignal: signal });
  } catch (error) {
    throwIfAborted(signal, "start container");
    if (dockerStatusCode(error) === 304) return; // already running
    const info = await inspectContainer(docker, nameOrId).catch(() => undefined);
    if (info?.State.Running) return; // a concurrent start won
    throw toProvisionerError("start container", error);
  }
}

/**
 * Freezes a running container's processes (the cgroup freezer): memory and connections stay, nothing runs. Already
 * paused is success. False when the container is not running (there is nothing to freeze).
 */
export async function pauseContainer(
  docker: Dockerode,
  nameOrId: string,
  signal?: AbortSignal,
): Promise<boolean> {
  throwIfAborted(signal, "pause container");
  try {
    await docker.getContainer(nameOrId).pause({ abortSignal: signal });
    return true;
  } catch (error) {
    throwIfAborted(signal, "pause container");
    const info = await inspectContainer(docker, nameOrId).catch(() => undefined);
    if (info?.State.Paused) return true; // paused already, or by a concurrent call
    if (info && !info.State.Running) return false;
    throw toProvisionerError("pause container", error);
  }
}

/** Thaws a paused container; not paused (already thawed, by a concurrent call say) is success. */
export async function unpauseContainer(
  docker: Dockerode,
  nameOrId: string,
  signal?: AbortSignal,
): Promise<void> {
  throwIfAborted(signal, "unpause container");
  try {
    await docker.getContainer(nameOrId).unpause({ abortSignal: signal });
  } catch (error) {
    throwIfAborted(signal, "unpause container");
    const info = await inspectContainer(docker, nameOrId).catch(() => undefined);
    if (info && !info.State.Paused) return;
    throw toProvisionerError("unpause container", error);
  }
}

/**
 * Stops a running container, giving its process `timeoutSeconds` after SIGTERM before the engine kills it; already
 * stopped or gone is success. The engine answers only once the container has stopped: the signal ends the wait.
 */
export async function stopContainer(
  docker: Dockerode,
  nameOrId: string,
  timeoutSeconds: number,
  signal?: AbortSignal,
): Promise<void> {
  await dockerCall(
    "stop container",
    (abortSignal) => docker.getContainer(nameOrId).stop({ t: timeoutSeconds, abortSignal }),
    [304, 404],
    signal,
  );
}

/** Force-removes a container; already gone is success, a concurrent removal is waited for. */
export async function removeContainer(
  docker: Dockerode,
  nameOrId: string,
  signal?: AbortSignal,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(signal, "remove container");
    try {
      await docker.getContainer(nameOrId).remove({ force: true, abortSignal: signal });
      return;
    } catch (error) {
      throwIfAborted(signal, "remove container");
      const status = dockerStatusCode(error);
      if (status === 404) return;
      // 409: "removal already in progress" (a concurrent destroy): wait for it to finish.
      if (status !== 409 || attempt >= 50) throw toProvisionerError("remove container", error);
      await pauseUnlessAborted(sleep, 200, signal, "docker");
    }
  }
}

/** Removes a volume; already gone is success. Still in use after ~10 s is a retryable conflict. */
export async function removeVolume(docker: Dockerode, name: string, signal?: AbortSignal): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(signal, "remove volume");
    try {
      await docker.getVolume(name).remove({ abortSignal: signal });
      return;
    } catch (error) {
      throwIfAborted(signal, "remove volume");
      const status = dockerStatusCode(error);
      if (status === 404) return;
      // 409: still in use by a container being removed.
      if (status !== 409 || attempt >= 50) {
        const mapped = toProvisionerError("remove volume", error);
        throw status === 409
          ? new ProvisionerError("conflict", mapped.message, true, mapped.details)
          : mapped;
      }
      await pauseUnlessAborted(sleep, 200, signal, "docker");
    }
  }
}

/** Pulls `image`, bounded by `timeoutMs` and the caller's signal; never hangs. */
export async function pullImage(
  docker: Dockerode,
  image: string,
  options: { timeoutMs: number; signal?: AbortSignal; logger?: DockerLogger },
): Promise<void> {
  const { timeoutMs, signal } = options;
  const log = options.logger ?? noopDockerLogger;
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  let stream: NodeJS.ReadableStream | undefined;
  const work = (async () => {
    stream = (await docker.pull(image, { abortSignal: controller.signal })) as NodeJS.ReadableStream;
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream as NodeJS.ReadableStream, (error: Error | null) =>
        error ? reject(error) : resolve(),
      );
    });
  })();
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`pull timed out after ${Math.round(timeoutMs / 1000)} s`)),
      timeoutMs,
    );
    controller.signal.addEventListener("abort", () => reject(new Error("pull aborted")), { once: true });
  });
  try {
    await Promise.race([work, deadline]);
  } catch (error) {
    controller.abort();
    (stream as { destroy?: () => void } | undefined)?.destroy?.();
    work.catch(() => {});
    const reason = dockerReason(error, "pull image");
    log.warn({ image, reason }, "docker: image pull failed");
    if (signal?.aborted) {
      throw new ProvisionerError("timeout", `pull of image ${image} was aborted by the caller`, true, {
        image,
      });
    }
    throw new ProvisionerError(
      "image_unavailable",
      `image ${image} is not present on the docker engine and could not be pulled: ${reason}`,
      false,
      { image },
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Present already, or pulled now (bounded as pullImage). */
export async function ensureImage(
  docker: Dockerode,
  image: string,
  options: { timeoutMs: number; signal?: AbortSignal; logger?: DockerLogger },
): Promise<"present" | "pulled"> {
  const found = await dockerCall(
    "inspect image",
    () => docker.getImage(image).inspect(),
    [404],
    options.signal,
  );
  if (found) return "present";
  options.logger?.info({ image }, "docker: pulling missing image");
  await pullImage(docker, image, options);
  return "pulled";
}

function describeStopped(state: Dockerode.ContainerInspectInfo["State"]): string {
  if (state.Status === "created") return "container created but never started";
  const parts = [`exited with code ${state.ExitCode}`];
  if (state.OOMKilled) parts.push("(out of memory)");
  // The engine's text may quote the container's environment: only its kind is said.
  if (state.Error) parts.push(`: ${dockerErrorClass(state.Error) ?? "the engine recorded an error"}`);
  if (state.FinishedAt && !state.FinishedAt.startsWith("0001-")) parts.push(`at ${state.FinishedAt}`);
  return parts.join(" ");
}

/** What a container's state means as a RuntimeStatus (the container exists; a missing one is `missing`). */
export function containerRuntimeStatus(state: Dockerode.ContainerInspectInfo["State"]): RuntimeStatus {
  if (state.Restarting) return { state: "starting", detail: "restarting" };
  if (state.Paused) return { state: "suspended", detail: "paused" };
  if (state.Running) return { state: "running" };
  if (state.Status === "removing") return { state: "stopped", detail: "being removed" };
  return { state: "stopped", detail: describeStopped(state) };
}
