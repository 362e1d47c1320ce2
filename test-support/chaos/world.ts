/**
 * What the backends hold at the end of the chaos run, read directly (not through the services): the Docker engine's
 * containers and volumes labelled with the deployment, the Fly emulator's machines and volumes, and the EC2
 * instances, security groups and bundle secrets tagged with the deployment (through the proxy, as the services see
 * them). Each is grouped by the workspace or org it belongs to.
 */
import {
  DescribeInstancesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  type Instance,
} from "@aws-sdk/client-ec2";
import { ListSecretsCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type { FlyEmulator } from "@molecule/fly-emulator";
import { LABELS } from "@molecule/provisioner-core";
import type Dockerode from "dockerode";
import { TEST_CREDENTIALS, TEST_REGION } from "../../packages/provisioner-core/src/ec2/testkit.ts";

function group<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const grouped = new Map<string, T[]>();
  for (const item of items) grouped.set(key(item), [...(grouped.get(key(item)) ?? []), item]);
  return grouped;
}

export interface DockerWorld {
  containers: Map<string, { id: string; name: string; running: boolean }[]>;
  volumes: Map<string, string[]>;
}

/** Containers and volumes labelled with the deployment, by workspace id (`?` for one without). */
export async function dockerWorld(docker: Dockerode, deployment: string): Promise<DockerWorld> {
  const filters = { label: [`${LABELS.deployment}=${deployment}`] };
  const containers = await docker.listContainers({ all: true, filters });
  const volumes = (await docker.listVolumes({ filters })).Volumes ?? [];
  return {
    containers: group(
      containers.map((c) => ({
        id: c.Id,
        name: (c.Names[0] ?? "").replace(/^\//, ""),
        running: c.State === "running",
        workspaceId: c.Labels[LABELS.workspaceId] ?? "?",
      })),
      (c) => c.workspaceId,
    ),
    volumes: new Map(
      [...group(volumes, (v) => v.Labels?.[LABELS.workspaceId] ?? "?").entries()].map(([id, list]) => [
        id,
        list.map((v) => v.Name),
      ]),
    ),
  };
}

export interface FlyWorld {
  machines: Map<string, { id: string; state: string; volumeId: string | null }[]>;
  /** Live volumes by id, with the workspace named by the machine they are attached to or by their name. */
  volumes: { id: string; name: string; attachedMachineId: string | null }[];
}

/** Live machines of the app by their workspace id (metadata), and its live volumes. */
export function flyWorld(fly: FlyEmulator, app: string): FlyWorld {
  const machines = fly.machines(app).map((m) => {
    const config = m.config as {
      metadata?: Record<string, string>;
      mounts?: { volume?: string }[];
    };
    return {
      id: m.id,
      state: m.state,
      volumeId: config.mounts?.[0]?.volume ?? null,
      workspaceId: config.metadata?.[LABELS.workspaceId] ?? "?",
    };
  });
  return {
    machines: group(machines, (m) => m.workspaceId),
    volumes: fly
      .volumes(app)
      .map((v) => ({ id: v.id, name: v.name, attachedMachineId: v.attachedMachineId })),
  };
}

export interface Ec2World {
  /** Instances that are not terminated, by OrgID tag. */
  instances: Map<string, Instance[]>;
  groupsByOrg: Map<string, string[]>;
  secretsByOrg: Map<string, string[]>;
}

/** Everything tagged with the deployment, by OrgID tag. */
export async function ec2World(endpoint: string, deployment: string): Promise<Ec2World> {
  const ec2 = new EC2Client({ region: TEST_REGION, endpoint, credentials: TEST_CREDENTIALS });
  const secrets = new SecretsManagerClient({ region: TEST_REGION, endpoint, credentials: TEST_CREDENTIALS });
  try {
    const tagOf = (tags: { Key?: string; Value?: string }[] | undefined, key: string) =>
      tags?.find((tag) => tag.Key === key)?.Value ?? "?";
    const byDeployment = [{ Name: "tag:MoleculeDeployment", Values: [deployment] }];
    const reservations =
      (await ec2.send(new DescribeInstancesCommand({ Filters: byDeployment }))).Reservations ?? [];
    const instances = reservations
      .flatMap((r) => r.Instances ?? [])
      .filter((i) => i.State?.Name !== "terminated");
    const groups =
      (await ec2.send(new DescribeSecurityGroupsCommand({ Filters: byDeployment }))).SecurityGroups ?? [];
    const secretList: { Name?: string; Tags?: { Key?: string; Value?: string }[]; DeletedDate?: Date }[] = [];
    let nextToken: string | undefined;
    do {
      const page = await secrets.send(new ListSecretsCommand({ NextToken: nextToken, MaxResults: 100 }));
      secretList.push(...(page.SecretList ?? []));
      nextToken = page.NextToken;
    } while (nextToken);
    const ours = secretList.filter(
      (s) => !s.DeletedDate && tagOf(s.Tags, "MoleculeDeployment") === deployment,
    );
    return {
      instances: group(instances, (i) => tagOf(i.Tags, "OrgID")),
      groupsByOrg: new Map(
        [...group(groups, (g) => tagOf(g.Tags, "OrgID")).entries()].map(([org, list]) => [
          org,
          list.map((g) => g.GroupId ?? "?"),
        ]),
      ),
      secretsByOrg: new Map(
        [...group(ours, (s) => tagOf(s.Tags, "OrgID")).entries()].map(([org, list]) => [
          org,
          list.map((s) => s.Name ?? "?"),
        ]),
      ),
    };
  } finally {
    ec2.destroy();
    secrets.destroy();
  }
}
