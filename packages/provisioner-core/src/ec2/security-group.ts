/**
 * One security group per VM in a VPC. Ingress is only ever from other security groups: `tcp/22` from the EC2 Instance
 * Connect endpoint's group, the service port from the groups the caller names (the org's tenant, for a workspace; the
 * load balancer or control plane, for a tenant). Never a CIDR, so never 0.0.0.0/0. Creating is idempotent: the group
 * is found by its name and tags, and a rule that exists already (`InvalidPermission.Duplicate`) is success.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteSecurityGroupCommand,
  DescribeSecurityGroupsCommand,
  type IpPermission,
  type SecurityGroup,
} from "@aws-sdk/client-ec2";
import { backoffDelay } from "@molecule/contracts";
import { ProvisionerError } from "../errors.ts";
import type { AwsAccess } from "./aws.ts";
import { isAwsError, isAwsNotFound, NOT_YET_VISIBLE } from "./aws.ts";
import {
  type Ec2Scope,
  isOwnedBy,
  ownerFilters,
  ownerTags,
  scopedName,
  tagMap,
  type VmOwner,
} from "./tags.ts";

export interface IngressRules {
  /** The EC2 Instance Connect endpoint's security group: the only source of `tcp/22`. None: no SSH rule. */
  sshSourceGroupId?: string;
  /** The port the VM serves (the agent's 8000, the tenant platform's port); needed when there are sources. */
  servicePort?: number;
  /** The only sources of `servicePort`. */
  serviceSourceGroupIds: readonly string[];
}

const GROUP_ID = /^sg-[0-9a-f]{8,17}$/;

function assertGroupId(id: string, what: string): string {
  if (!GROUP_ID.test(id))
    throw new ProvisionerError("invalid_spec", `ec2: ${what} is not a security group id`, false);
  return id;
}

/** The permissions the rules ask for: one per source group, TCP only. */
export function ingressPermissions(rules: IngressRules): IpPermission[] {
  const port = rules.servicePort ?? 0;
  if (rules.serviceSourceGroupIds.length > 0 && (!Number.isInteger(port) || port < 1 || port > 65_535)) {
    throw new ProvisionerError("invalid_spec", "ec2: the service port must be 1-65535", false);
  }
  const out: IpPermission[] = [];
  if (rules.sshSourceGroupId) {
    out.push({
      IpProtocol: "tcp",
      FromPort: 22,
      ToPort: 22,
      UserIdGroupPairs: [
        {
          GroupId: assertGroupId(rules.sshSourceGroupId, "the SSH source group"),
          Description: "EC2 Instance Connect",
        },
      ],
    });
  }
  for (const source of new Set(rules.serviceSourceGroupIds)) {
    out.push({
      IpProtocol: "tcp",
      FromPort: port,
      ToPort: port,
      UserIdGroupPairs: [{ GroupId: assertGroupId(source, "a service source group") }],
    });
  }
  return out;
}

/** The owner's group in `vpcId` (found by its tags), or null. */
export async function findSecurityGroup(
  aws: AwsAccess,
  scope: Ec2Scope,
  owner: VmOwner,
  vpcId?: string,
): Promise<SecurityGroup | null> {
  const groups = await findSecurityGroups(aws, scope, owner, vpcId);
  return groups[0] ?? null;
}

/** Every group tagged as the owner's (normally one). */
export async function findSecurityGroups(
  aws: AwsAccess,
  scope: Ec2Scope,
  owner: VmOwner,
  vpcId?: string,
): Promise<SecurityGroup[]> {
  const filters = ownerFilters(scope, owner);
  if (vpcId) filters.push({ Name: "vpc-id", Values: [vpcId] });
  const reply = await aws.call("EC2", "DescribeSecurityGroups", (abortSignal) =>
    aws.ec2.send(new DescribeSecurityGroupsCommand({ Filters: filters }), { abortSignal }),
  );
  return (reply.SecurityGroups ?? []).filter((g) => isOwnedBy(tagMap(g.Tags), scope, owner));
}

/**
 * Creates (or adopts) the owner's group in `vpcId` and makes sure every rule is present. A group of that name that is
 * not the owner's is a conflict (never adopted).
 */
export async function ensureSecurityGroup(
  aws: AwsAccess,
  scope: Ec2Scope,
  owner: VmOwner,
  vpcId: string,
  rules: IngressRules,
): Promise<string> {
  const permissions = ingressPermissions(rules);
  const groupName = scopedName(scope, owner);
  let group = await findSecurityGroup(aws, scope, owner, vpcId);
  if (!group) {
    try {
      const created = await aws.call("EC2", "CreateSecurityGroup", (abortSignal) =>
        aws.ec2.send(
          new CreateSecurityGroupCommand({
            GroupName: groupName,
            Description: `Molecule ${owner.role} ${groupName}`,
            VpcId: vpcId,
            TagSpecifications: [{ ResourceType: "security-group", Tags: ownerTags(scope, owner) }],
          }),
          { abortSignal },
        ),
      );
      group = { GroupId: created.GroupId, IpPermissions: [] };
    } catch (error) {
      // A create whose answer was lost, or a concurrent one: the group of that name exists.
      if (!isAwsError(error, "InvalidGroup.Duplicate")) throw error;
      const byName = await aws.call("EC2", "DescribeSecurityGroups", (abortSignal) =>
        aws.ec2.send(
          new DescribeSecurityGroupsCommand({
            Filters: [
              { Name: "group-name", Values: [groupName] },
              { Name: "vpc-id", Values: [vpcId] },
            ],
          }),
          { abortSignal },
        ),
      );
      group = byName.SecurityGroups?.[0] ?? null;
      if (!group || !isOwnedBy(tagMap(group.Tags), scope, owner)) {
        throw new ProvisionerError(
          "conflict",
          `a security group named ${groupName} exists but is not this ${owner.role}'s`,
          false,
        );
      }
    }
  }
  const groupId = group.GroupId;
  if (!groupId)
    throw new ProvisionerError("backend_error", "AWS EC2 CreateSecurityGroup answered no group id", true);
  const missing = permissions.filter((p) => !hasPermission(group.IpPermissions ?? [], p));
  if (missing.length > 0) await authorize(aws, groupId, missing);
  return groupId;
}

/**
 * Adds the permissions; a group made moments ago may not be visible yet (retried). When some exist already (a retry
 * whose first answer was lost: `InvalidPermission.Duplicate`), adds the rest one by one.
 */
async function authorize(aws: AwsAccess, groupId: string, permissions: IpPermission[]): Promise<void> {
  const backoff = aws.backoff();
  for (;;) {
    try {
      await aws.call("EC2", "AuthorizeSecurityGroupIngress", (abortSignal) =>
        aws.ec2.send(
          new AuthorizeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: permissions }),
          {
            abortSignal,
          },
        ),
      );
      return;
    } catch (error) {
      if (isAwsError(error, "InvalidPermission.Duplicate")) {
        if (permissions.length > 1)
          for (const permission of permissions) await authorize(aws, groupId, [permission]);
        return;
      }
      await aws.pauseOrThrow(backoff, error, NOT_YET_VISIBLE);
    }
  }
}

function hasPermission(existing: readonly IpPermission[], wanted: IpPermission): boolean {
  const source = wanted.UserIdGroupPairs?.[0]?.GroupId;
  return existing.some(
    (p) =>
      p.IpProtocol === wanted.IpProtocol &&
      p.FromPort === wanted.FromPort &&
      p.ToPort === wanted.ToPort &&
      (p.UserIdGroupPairs ?? []).some((pair) => pair.GroupId === source),
  );
}

/** Waits while an instance still uses the group: 100 ms doubling to 5 s, no jitter (the deadline bounds it). */
const DEPENDENCY_WAIT = { baseMs: 100, maxMs: 5_000, jitter: "none" as const };

/**
 * Deletes the group, retrying `DependencyViolation` (an instance shutting down still uses it) until `deadline`
 * (a clock value). Already gone is success.
 */
export async function deleteSecurityGroup(aws: AwsAccess, groupId: string, deadline: number): Promise<void> {
  for (let tries = 1; ; tries += 1) {
    try {
      await aws.call("EC2", "DeleteSecurityGroup", (abortSignal) =>
        aws.ec2.send(new DeleteSecurityGroupCommand({ GroupId: groupId }), { abortSignal }),
      );
      return;
    } catch (error) {
      if (isAwsNotFound(error)) return;
      if (!isAwsError(error, "DependencyViolation")) throw error;
      const wait = backoffDelay(tries, DEPENDENCY_WAIT);
      if (aws.now() + wait > deadline) {
        throw new ProvisionerError(
          "timeout",
          `security group ${groupId} is still in use (DependencyViolation) at the deadline; retry later`,
          true,
          { groupId },
        );
      }
      await aws.pause(wait);
    }
  }
}

/** The org's workspaces group (`org-workspaces`): no rules; every workspace VM of the org joins it. */
export const orgWorkspacesOwner = (orgId: string): VmOwner => ({ role: "org-workspaces", orgId });

/** Creates (or adopts) the org's workspaces group in `vpcId`; the tenant admits it on its port. */
export function ensureOrgWorkspacesGroup(
  aws: AwsAccess,
  scope: Ec2Scope,
  orgId: string,
  vpcId: string,
): Promise<string> {
  return ensureSecurityGroup(aws, scope, orgWorkspacesOwner(orgId), vpcId, { serviceSourceGroupIds: [] });
}
