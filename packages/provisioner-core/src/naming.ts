import { idShape, isId } from "@molecule/contracts";
import { ProvisionerError } from "./errors.ts";

/**
 * The provisioner boundary: a workspace id every backend checks before it builds a name, an engine path or a cloud
 * API path from it. Only ids the platform mints pass (`ws_` and 26 lower-case letters and digits), so no name or
 * path is ever derived from a string a client chose, and a workspace name can never equal another kind of resource
 * (a control-plane tenant is `tenant-<slug>`). Anything else is a non-retryable `invalid_spec`; the message does not
 * repeat the refused value.
 */
export function assertWorkspaceId(workspaceId: unknown): string {
  if (!isId("ws", workspaceId)) {
    throw new ProvisionerError("invalid_spec", `workspace id must be ${idShape("ws")}`, false);
  }
  return workspaceId as string;
}

/**
 * Deterministic resource names: a retried create finds what the first attempt made.
 * `ws_01j…` becomes `ws-01j…`: the full id, in the character set container and machine names accept.
 */
export function resourceName(workspaceId: string): string {
  return assertWorkspaceId(workspaceId).replace("_", "-");
}

export const LABELS = {
  managed: "molecule.managed",
  workspaceId: "molecule.workspace_id",
  orgId: "molecule.org_id",
  deployment: "molecule.deployment",
  /** MOLECULE_ENV, where the operator sets one: listings skip resources labelled with another environment. */
  environment: "molecule.environment",
  /** What the resource is, where one engine holds more than workspaces (the control plane's `tenant`). */
  kind: "molecule.kind",
  /** A warm pool member's pool (`WorkspaceSpec.pool`). */
  pool: "molecule.pool",
} as const;

/** The pool label's value for a pool of `runtime` and `tier`. */
export function poolLabel(runtime: string, tier: number): string {
  return `${runtime}-t${tier}`;
}
