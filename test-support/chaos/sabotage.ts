/**
 * What bugs and operators do behind the platform's back during the chaos run, each through the backend's own API as
 * any client would: resources left behind for a workspace or org that does not exist (a docker container and volume,
 * a Fly machine, an EC2 tenant instance, all labelled or tagged as this deployment's and environment's, so the
 * reconciler must find them as orphans and delete them), and a live workspace's container or machine removed (a
 * ghost the reconciler must mark failed). Every leak and ghost is noted, to be compared with the reconcile reports.
 */
import { EC2Client, RunInstancesCommand } from "@aws-sdk/client-ec2";
import { createIdGenerator } from "@molecule/contracts";
import { LABELS, labelsFor, resourceName } from "@molecule/provisioner-core";
import type Dockerode from "dockerode";
import { type Ec2Scope, ownerTags } from "../../packages/provisioner-core/src/ec2/tags.ts";
import { TEST_CREDENTIALS, TEST_REGION } from "../../packages/provisioner-core/src/ec2/testkit.ts";

export interface Leak {
  service: "tenant" | "control-plane";
  backend: "docker" | "flyio" | "ec2";
  /** The workspace id (docker, Fly) or org id (EC2) the resources claim to belong to. */
  owner: string;
  /** How many resources the reconciler must report for it (a container and its volume are two). */
  resources: number;
}

export interface Ghost {
  service: "tenant" | "control-plane";
  workspaceId: string;
}

export interface SabotageTargets {
  docker: Dockerode;
  /** The image the leaked container is created from (never started: an orphan need not run). */
  dockerImage: string;
  /** The tenant platform's org (its docker workspaces carry it). */
  tenantOrgId: string;
  fly: { url: string; token: string; app: string };
  aws: { endpoint: string; imageId: string; subnetId: string };
  scope: Ec2Scope;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Saboteur {
  readonly leaks: Leak[] = [];
  readonly ghosts: Ghost[] = [];
  private readonly ids = createIdGenerator();

  constructor(private readonly targets: SabotageTargets) {}

  /** A container and its volume labelled as this deployment's workspace, for a workspace id that was never created. */
  async leakDockerWorkspace(): Promise<void> {
    const { docker, scope, tenantOrgId } = this.targets;
    const workspaceId = this.ids.next("ws");
    const name = resourceName(workspaceId);
    const Labels = {
      ...labelsFor({ workspaceId, orgId: tenantOrgId, deployment: scope.deployment }),
      [LABELS.environment]: scope.environment,
    };
    await docker.createVolume({ Name: name, Labels });
    await docker.createContainer({
      name,
      Image: this.targets.dockerImage,
      Labels,
      HostConfig: { Binds: [`${name}:/data`], NetworkMode: "none" },
    });
    this.leaks.push({ service: "tenant", backend: "docker", owner: workspaceId, resources: 2 });
  }

  /**
   * A machine in the workspace app with this deployment's metadata for a workspace that does not exist. The emulator
   * may be armed with a fault that this request consumes; a name is unique in an app, so sending it again until it is
   * answered 200 (made) or 422 (made by an earlier send) makes exactly one.
   */
  async leakFlyMachine(): Promise<void> {
    const { fly, scope } = this.targets;
    const workspaceId = this.ids.next("ws");
    const body = {
      name: resourceName(workspaceId),
      region: "ord",
      config: {
        image: this.targets.dockerImage,
        guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
        metadata: {
          [LABELS.managed]: "true",
          [LABELS.workspaceId]: workspaceId,
          [LABELS.orgId]: this.ids.next("org"),
          [LABELS.deployment]: scope.deployment,
          [LABELS.environment]: scope.environment,
        },
      },
    };
    for (;;) {
      const status = await this.flyCall("POST", `/v1/apps/${fly.app}/machines`, body);
      if (status === 200 || status === 422) break;
      await sleep(500);
    }
    this.leaks.push({ service: "control-plane", backend: "flyio", owner: workspaceId, resources: 1 });
  }

  /** A running tenant instance tagged as this deployment's and environment's for an org that was deleted. */
  async leakEc2Tenant(org: { id: string; slug: string }): Promise<void> {
    const { aws, scope } = this.targets;
    const ec2 = new EC2Client({ region: TEST_REGION, endpoint: aws.endpoint, credentials: TEST_CREDENTIALS });
    try {
      await ec2.send(
        new RunInstancesCommand({
          ImageId: aws.imageId,
          SubnetId: aws.subnetId,
          InstanceType: "t3.micro",
          MinCount: 1,
          MaxCount: 1,
          TagSpecifications: [
            {
              ResourceType: "instance",
              Tags: ownerTags(scope, { role: "tenant", orgId: org.id, orgSlug: org.slug }),
            },
          ],
        }),
      );
    } finally {
      ec2.destroy();
    }
    this.leaks.push({ service: "control-plane", backend: "ec2", owner: org.id, resources: 1 });
  }

  /** `docker rm -f` of a live workspace's container (its volume stays). */
  async removeContainer(workspaceId: string): Promise<void> {
    await this.targets.docker.getContainer(resourceName(workspaceId)).remove({ force: true });
    this.ghosts.push({ service: "tenant", workspaceId });
  }

  /** Destroys a control-plane workspace's Fly machine (force: it runs), sent again while a lease holds it. */
  async destroyFlyMachine(workspaceId: string, machineId: string): Promise<void> {
    const { fly } = this.targets;
    for (;;) {
      const status = await this.flyCall("DELETE", `/v1/apps/${fly.app}/machines/${machineId}?force=true`);
      if (status === 200) break;
      await sleep(500);
    }
    this.ghosts.push({ service: "control-plane", workspaceId });
  }

  /** The owner of each resource leaked through the service's backends, sorted, as its orphan list must name them. */
  expectedOrphans(service: Leak["service"]): string[] {
    return this.leaks
      .filter((leak) => leak.service === service)
      .flatMap((leak) => Array.from({ length: leak.resources }, () => leak.owner))
      .sort();
  }

  summary(): string {
    const count = (backend: Leak["backend"]) => this.leaks.filter((leak) => leak.backend === backend).length;
    const ghosts = (service: Ghost["service"]) => this.ghosts.filter((g) => g.service === service).length;
    return `leaked ${count("docker")} docker workspaces (container + volume), ${count("flyio")} Fly machines, ${count("ec2")} EC2 tenant instances; ghosts made: ${ghosts("tenant")} containers removed, ${ghosts("control-plane")} Fly machines destroyed`;
  }

  private async flyCall(method: string, path: string, body?: unknown): Promise<number> {
    const { fly } = this.targets;
    const response = await fetch(`${fly.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${fly.token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    await response.arrayBuffer();
    return response.status;
  }
}
