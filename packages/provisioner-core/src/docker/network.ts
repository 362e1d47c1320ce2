/**
 * Container networking shared by the workspace backend and the control plane's tenant backend.
 *
 * `host` shares the host's network; Docker's default `bridge` network has no DNS between containers. Any other name is
 * a user-defined bridge network that the backends create when missing (labelled `molecule.managed=true`), on which a
 * container is reachable by its name from every other container on it. That is how workspaces reach a tenant platform
 * container (`http://tenant-<slug>:<port>`) and how the platform reaches agents (`http://ws-<workspace id>:<port>`).
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import type Dockerode from "dockerode";
import { LABELS } from "../naming.ts";
import { createDockerClient } from "./client.ts";
import { dockerCall } from "./engine.ts";
import { dockerStatusCode, toProvisionerError } from "./errors.ts";

/** The name containers on a bridge network give to the host (mapped to the host gateway, Docker ≥ 20.10). */
export const HOST_GATEWAY_NAME = "host.docker.internal";
export const HOST_GATEWAY_EXTRA_HOST = `${HOST_GATEWAY_NAME}:host-gateway`;

/**
 * Where workspaces (and tenants) run unless configured otherwise: a user-defined network, created when missing, on
 * which containers reach each other by name. Docker's default `bridge` has no names; `host` is for single-host CI.
 */
export const DEFAULT_WORKSPACE_NETWORK = "molecule";

/** True for a network on which containers find each other by name: neither `host`, `bridge` nor `none`. */
export function isUserDefinedNetwork(network: string): boolean {
  return network !== "host" && network !== "bridge" && network !== "none";
}

/**
 * Creates the user-defined bridge network `name` unless it exists. Concurrent callers (two backends starting at once)
 * both succeed. A network of that name made by someone else is used as it is.
 */
export async function ensureNetwork(docker: Dockerode, name: string): Promise<void> {
  const existing = await dockerCall("inspect network", () => docker.getNetwork(name).inspect(), [404]);
  if (existing) return;
  try {
    await docker.createNetwork({
      Name: name,
      Driver: "bridge",
      CheckDuplicate: true,
      Labels: { [LABELS.managed]: "true" },
    });
  } catch (error) {
    // 409: a concurrent call created it first.
    if (dockerStatusCode(error) !== 409) throw toProvisionerError("create network", error);
  }
}

/**
 * Network settings for a container named `name` on `network`: the endpoint carries the name as an alias, so other
 * containers on a user-defined network reach it by name; on a bridge network the host is `host.docker.internal`.
 */
export function containerNetworking(
  network: string,
  name: string,
): {
  hostConfig: Pick<Dockerode.HostConfig, "NetworkMode" | "ExtraHosts">;
  networkingConfig?: Dockerode.ContainerCreateOptions["NetworkingConfig"];
} {
  if (network === "host") return { hostConfig: { NetworkMode: "host" } };
  return {
    hostConfig: { NetworkMode: network, ExtraHosts: [HOST_GATEWAY_EXTRA_HOST] },
    ...(isUserDefinedNetwork(network)
      ? { networkingConfig: { EndpointsConfig: { [network]: { Aliases: [name] } } } }
      : {}),
  };
}

export type ContainerResolver = (hostname: string) => Promise<LookupAddress[]>;

const systemLookup: ContainerResolver = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  );

/**
 * Resolves container names on `network` to their addresses there, the way Docker's DNS does inside the network, for a
 * process on the host (a tenant platform run outside Docker). Only containers this engine labels as managed by
 * Molecule are resolved; every other name goes to `fallback` (the system resolver by default).
 */
export function createContainerResolver(
  network: string,
  {
    docker = createDockerClient(),
    fallback = systemLookup,
  }: { docker?: Dockerode; fallback?: ContainerResolver } = {},
): ContainerResolver {
  return async (hostname) => {
    if (!isUserDefinedNetwork(network) || !/^[a-z0-9][a-z0-9_.-]*$/.test(hostname)) return fallback(hostname);
    const info = await dockerCall("inspect container", () => docker.getContainer(hostname).inspect(), [404]);
    const address = info?.NetworkSettings.Networks?.[network]?.IPAddress;
    if (!info || info.Config.Labels?.[LABELS.managed] !== "true" || !address) return fallback(hostname);
    return [{ address, family: 4 }];
  };
}
