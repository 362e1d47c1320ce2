/**
 * Resources on the local engine that belong to one owner: a workspace (the workspace backend) or an org's tenant (the
 * control plane's tenant backend). An owner is the set of labels its resources carry; a resource found under a
 * deterministic name is used only when it carries them all, so nothing of another owner is ever adopted, stopped or
 * removed. Each call maps engine failures to ProvisionerError.
 */
import type Dockerode from "dockerode";
import { ProvisionerError } from "../errors.ts";
import { LABELS } from "../naming.ts";
import type { ManagedResource, RuntimeStatus } from "../provisioner.ts";
import { containerRuntimeStatus, dockerCall, inspectContainer } from "./engine.ts";
import { dockerStatusCode, toProvisionerError } from "./errors.ts";

type Labels = Record<string, string> | null | undefined;

export interface DockerOwner {
  /** Labels every resource of the owner carries (and that no other owner's resources carry all of). */
  labels: Record<string, string>;
  /** What the owner is, for a conflict's message ("workspace", "org"); never which one the other owner is. */
  noun: string;
}

/** True when `labels` carry every label of `owner`. */
export function ownedBy(owner: DockerOwner, labels: Labels): boolean {
  return Object.entries(owner.labels).every(([key, value]) => labels?.[key] === value);
}

/**
 * The conflict for a `kind` named `name` that exists but is not `owner`'s. It says no more than that: whose it is
 * (another workspace, another org, another deployment, or nothing of Molecule's) would tell one org another's ids.
 */
export function notOwnedError(owner: DockerOwner, kind: string, name: string): ProvisionerError {
  return new ProvisionerError(
    "conflict",
    `a ${kind} named ${name} exists but is not this ${owner.noun}'s; the name is taken by a resource it does not own`,
    false,
    { kind, name },
  );
}

/** The container named `name`, undefined when there is none; one that is not `owner`'s is a conflict. */
export async function inspectOwnedContainer(
  docker: Dockerode,
  name: string,
  owner: DockerOwner,
): Promise<Dockerode.ContainerInspectInfo | undefined> {
  const info = await inspectContainer(docker, name);
  if (info && !ownedBy(owner, info.Config.Labels)) throw notOwnedError(owner, "container", name);
  return info;
}

/**
 * Creates the volume `name` with `labels`, or adopts the one of that name an earlier call made, after checking it is
 * `owner`'s. Creating a volume whose name exists answers with the existing one, labels included, so one request both
 * makes and checks it; an answer without labels (not the engine's) is checked with an inspect.
 */
export async function ensureOwnedVolume(
  docker: Dockerode,
  name: string,
  labels: Record<string, string>,
  owner: DockerOwner,
): Promise<string> {
  // dockerode's createVolume keeps only the name of the answer: the request is made as it makes it.
  const made = await dockerCall(
    "create volume",
    () =>
      new Promise<{ Labels?: Labels }>((resolve, reject) =>
        docker.modem.dial(
          {
            path: "/volumes/create?",
            method: "POST",
            allowEmpty: true,
            options: { Name: name, Labels: labels },
            statusCodes: { 200: true, 201: true, 500: "server error" },
          },
          (error: unknown, data: unknown) =>
            error ? reject(error) : resolve((data ?? {}) as { Labels?: Labels }),
        ),
      ),
  );
  const found =
    made && "Labels" in made
      ? made.Labels
      : (await dockerCall("inspect volume", () => docker.getVolume(name).inspect()))?.Labels;
  if (!ownedBy(owner, found)) throw notOwnedError(owner, "volume", name);
  return name;
}

/** Creates a container: its id when made now, null when its name is taken (409). */
export async function createContainerUnlessTaken(
  docker: Dockerode,
  options: Dockerode.ContainerCreateOptions,
): Promise<string | null> {
  try {
    return (await docker.createContainer(options)).id;
  } catch (error) {
    if (dockerStatusCode(error) !== 409) throw toProvisionerError("create container", error);
    return null;
  }
}

/**
 * The container `name`, checked to be `owner`'s, once it can be inspected: a concurrent create may still be
 * registering the name, so a missing container is retried briefly.
 */
async function adoptContainer(
  docker: Dockerode,
  name: string,
  owner: DockerOwner,
): Promise<Dockerode.ContainerInspectInfo> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const info = await inspectOwnedContainer(docker, name, owner);
    if (info) return info;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new ProvisionerError("conflict", `container ${name} exists but cannot be inspected`, true);
}

/**
 * Runs `create` (the id: it made the container `name`; null: the name was taken) and returns that container's
 * details, checked to be `owner`'s.
 */
export async function createOrAdoptContainer(
  docker: Dockerode,
  name: string,
  owner: DockerOwner,
  create: () => Promise<string | null>,
): Promise<{ info: Dockerode.ContainerInspectInfo; created: boolean }> {
  const created = (await create()) !== null;
  return { info: await adoptContainer(docker, name, owner), created };
}

/**
 * Runs `create` from `options` and returns the container's id and image: of the one it made (nothing more to ask the
 * engine: it was made from the caller's options, so it is the owner's), or of the owner's container that already
 * had the name.
 */
export async function createOrAdoptContainerId(
  docker: Dockerode,
  owner: DockerOwner,
  options: Dockerode.ContainerCreateOptions & { name: string; Image: string },
): Promise<{ id: string; image: string; created: boolean }> {
  const id = await createContainerUnlessTaken(docker, options);
  if (id !== null) return { id, image: options.Image, created: true };
  const adopted = await adoptContainer(docker, options.name, owner);
  return { id: adopted.Id, image: adopted.Config.Image, created: false };
}

/**
 * Every container and volume of `owner`: those carrying its labels plus the ones under its deterministic names (which
 * must be its own).
 */
export async function findOwnedResources(
  docker: Dockerode,
  owner: DockerOwner,
  names: { container: string; volume: string },
): Promise<{ containerIds: string[]; volumeNames: string[] }> {
  const filters = { label: Object.entries(owner.labels).map(([key, value]) => `${key}=${value}`) };
  const [containers, volumes] = await Promise.all([
    dockerCall("list containers", () => docker.listContainers({ all: true, filters })),
    dockerCall("list volumes", () => docker.listVolumes({ filters })),
  ]);
  const containerIds = new Set((containers ?? []).map((c) => c.Id));
  const volumeNames = new Set((volumes?.Volumes ?? []).map((v) => v.Name));
  const named = await inspectOwnedContainer(docker, names.container, owner);
  if (named) containerIds.add(named.Id);
  const namedVolume = await dockerCall(
    "inspect volume",
    () => docker.getVolume(names.volume).inspect(),
    [404],
  );
  if (namedVolume) {
    if (!ownedBy(owner, namedVolume.Labels)) {
      throw notOwnedError(owner, "volume", names.volume);
    }
    volumeNames.add(names.volume);
  }
  return { containerIds: [...containerIds], volumeNames: [...volumeNames] };
}

/**
 * The status of the container `name`: `missing` when there is none; `unknown` when the engine cannot say (a transient
 * error is never reported as a dead container) or the container is not `owner`'s.
 */
export async function ownedContainerStatus(
  docker: Dockerode,
  name: string,
  owner: DockerOwner,
): Promise<RuntimeStatus> {
  let info: Dockerode.ContainerInspectInfo;
  try {
    info = await docker.getContainer(name).inspect();
  } catch (error) {
    if (dockerStatusCode(error) === 404) return { state: "missing", detail: `no container ${name}` };
    return { state: "unknown", detail: toProvisionerError("inspect container", error).message };
  }
  if (!ownedBy(owner, info.Config.Labels)) {
    return { state: "unknown", detail: notOwnedError(owner, "container", name).message };
  }
  return containerRuntimeStatus(info.State);
}

/**
 * Every container and volume carrying all of `labelFilter` (docker label filters, `key` or `key=value`), less those
 * labelled with an environment other than `environment` (docker cannot filter on a label's absence).
 */
export async function listManagedResources(
  docker: Dockerode,
  labelFilter: string[],
  environment?: string,
): Promise<ManagedResource[]> {
  const otherEnvironment = (labels: Record<string, string> | undefined) =>
    environment !== undefined &&
    labels?.[LABELS.environment] !== undefined &&
    labels[LABELS.environment] !== environment;
  const filters = { label: labelFilter };
  const [containers, volumes] = await Promise.all([
    dockerCall("list containers", () => docker.listContainers({ all: true, filters })),
    dockerCall("list volumes", () => docker.listVolumes({ filters })),
  ]);
  const out: ManagedResource[] = [];
  for (const c of containers ?? []) {
    if (otherEnvironment(c.Labels)) continue;
    out.push({
      kind: "container",
      id: c.Id,
      workspaceId: c.Labels[LABELS.workspaceId] ?? null,
      orgId: c.Labels[LABELS.orgId] ?? null,
      state: c.State,
      pool: c.Labels[LABELS.pool] ?? null,
    });
  }
  for (const v of volumes?.Volumes ?? []) {
    const labels = (v.Labels ?? {}) as Record<string, string>;
    if (otherEnvironment(labels)) continue;
    out.push({
      kind: "volume",
      id: v.Name,
      workspaceId: labels[LABELS.workspaceId] ?? null,
      orgId: labels[LABELS.orgId] ?? null,
      pool: labels[LABELS.pool] ?? null,
    });
  }
  return out;
}
