/**
 * Who an EC2 resource belongs to, written as tags on the instance, its volumes, its security group and its bootstrap
 * secret. Every lookup filters by the deployment AND the environment, so one installation never sees (let alone
 * adopts or deletes) another's resources, even in a shared account.
 */
import type { Filter, Tag } from "@aws-sdk/client-ec2";
import { OrgSlug } from "@molecule/contracts";
import { ProvisionerError } from "../errors.ts";
import { assertWorkspaceId, resourceName } from "../naming.ts";

/** The tag keys, in one place. */
export const EC2_TAGS = {
  orgId: "OrgID",
  orgSlug: "OrgSlug",
  /** `tenant` or `workspace` */
  role: "Role",
  workspaceId: "WorkspaceID",
  environment: "MOLECULE_ENV",
  deployment: "MoleculeDeployment",
  name: "Name",
} as const;

/**
 * `tenant` and `workspace` VMs; `org-workspaces` is the org's one group that every workspace VM of the org also joins:
 * no rules of its own, it is the source the org's tenant admits on its port (agents reach their platform).
 */
export type VmRole = "tenant" | "workspace" | "org-workspaces";

/** The installation whose resources these are: MOLECULE_DEPLOYMENT and MOLECULE_ENV. */
export interface Ec2Scope {
  deployment: string;
  environment: string;
}

/** What one VM belongs to: an org's tenant platform, or one workspace. */
export interface VmOwner {
  role: VmRole;
  orgId: string;
  /** Tagged when known (the control plane knows it; a workspace spec may not carry it). */
  orgSlug?: string;
  /** Required for the workspace role. */
  workspaceId?: string;
}

const DEPLOYMENT_SHAPE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const ENVIRONMENT_SHAPE = /^[a-z][a-z0-9-]{0,31}$/;

/** Checks the scope once, before any name or filter is built from it. */
export function assertScope(scope: Ec2Scope): Ec2Scope {
  if (!DEPLOYMENT_SHAPE.test(scope.deployment)) {
    throw new ProvisionerError(
      "invalid_spec",
      "ec2: deployment must be lower-case letters, digits and dashes",
      false,
    );
  }
  if (!ENVIRONMENT_SHAPE.test(scope.environment)) {
    throw new ProvisionerError(
      "invalid_spec",
      "ec2: environment (MOLECULE_ENV) must be a lower-case word",
      false,
    );
  }
  return scope;
}

/** Checks the owner: a workspace owner has a platform-minted workspace id, a tenant owner a slug-shaped slug. */
export function assertOwner(owner: VmOwner): VmOwner {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(owner.orgId)) {
    throw new ProvisionerError("invalid_spec", "ec2: org id has an unexpected shape", false);
  }
  if (owner.role === "workspace") assertWorkspaceId(owner.workspaceId);
  if (owner.orgSlug !== undefined && !OrgSlug.safeParse(owner.orgSlug).success) {
    throw new ProvisionerError(
      "invalid_spec",
      "org slug must be 3-40 lower-case letters, digits and dashes",
      false,
    );
  }
  if (owner.role === "tenant" && owner.orgSlug === undefined) {
    throw new ProvisionerError("invalid_spec", "ec2: a tenant VM needs its org slug", false);
  }
  return owner;
}

/** The owner's deterministic short name: `ws-<workspace id>`, `tenant-<slug>` or `workspaces-<org id>`. */
export function ownerName(owner: VmOwner): string {
  if (owner.role === "workspace") return resourceName(owner.workspaceId ?? "");
  if (owner.role === "org-workspaces") return `workspaces-${owner.orgId}`;
  return `tenant-${owner.orgSlug ?? ""}`;
}

/**
 * The name of the owner's security group and bootstrap secret: unique per deployment and environment, so two
 * installations sharing a VPC or an account never collide (`molecule-prod-production-ws-01j…`).
 */
export function scopedName(scope: Ec2Scope, owner: VmOwner): string {
  return `molecule-${scope.deployment}-${scope.environment}-${ownerName(owner)}`;
}

export function ownerTagMap(scope: Ec2Scope, owner: VmOwner): Record<string, string> {
  return {
    [EC2_TAGS.name]: ownerName(owner),
    [EC2_TAGS.deployment]: scope.deployment,
    [EC2_TAGS.environment]: scope.environment,
    [EC2_TAGS.role]: owner.role,
    [EC2_TAGS.orgId]: owner.orgId,
    ...(owner.orgSlug ? { [EC2_TAGS.orgSlug]: owner.orgSlug } : {}),
    ...(owner.workspaceId ? { [EC2_TAGS.workspaceId]: owner.workspaceId } : {}),
  };
}

export function ownerTags(scope: Ec2Scope, owner: VmOwner): Tag[] {
  return Object.entries(ownerTagMap(scope, owner)).map(([Key, Value]) => ({ Key, Value }));
}

/** EC2 filters for everything of this installation. */
export function scopeFilters(scope: Ec2Scope): Filter[] {
  return [
    { Name: `tag:${EC2_TAGS.deployment}`, Values: [scope.deployment] },
    { Name: `tag:${EC2_TAGS.environment}`, Values: [scope.environment] },
  ];
}

/** The tags that identify one owner's resources (not the slug, which an org may change, nor the Name). */
export function ownerIdentity(scope: Ec2Scope, owner: VmOwner): Record<string, string> {
  return {
    [EC2_TAGS.deployment]: scope.deployment,
    [EC2_TAGS.environment]: scope.environment,
    [EC2_TAGS.role]: owner.role,
    [EC2_TAGS.orgId]: owner.orgId,
    ...(owner.role === "workspace" ? { [EC2_TAGS.workspaceId]: owner.workspaceId ?? "" } : {}),
  };
}

/** EC2 filters for one owner's resources. */
export function ownerFilters(scope: Ec2Scope, owner: VmOwner): Filter[] {
  return Object.entries(ownerIdentity(scope, owner)).map(([key, value]) => ({
    Name: `tag:${key}`,
    Values: [value],
  }));
}

/** A resource's tags as a map. */
export function tagMap(
  tags: readonly { Key?: string; Value?: string }[] | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const tag of tags ?? []) if (tag.Key !== undefined) out[tag.Key] = tag.Value ?? "";
  return out;
}

/** True when `tags` carry every identity tag of `owner` in this scope. */
export function isOwnedBy(tags: Record<string, string>, scope: Ec2Scope, owner: VmOwner): boolean {
  return Object.entries(ownerIdentity(scope, owner)).every(([key, value]) => tags[key] === value);
}

/** True when `tags` put the resource in this installation. */
export function inScope(tags: Record<string, string>, scope: Ec2Scope): boolean {
  return tags[EC2_TAGS.deployment] === scope.deployment && tags[EC2_TAGS.environment] === scope.environment;
}
