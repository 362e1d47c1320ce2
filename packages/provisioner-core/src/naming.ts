/**
 * Deterministic resource names: a retried create finds what the first attempt made.
 * `ws_01j…` becomes `ws-01j…`: the full id, in the character set container and machine names accept.
 */
export function resourceName(workspaceId: string): string {
  return workspaceId.replace("_", "-");
}

export const LABELS = {
  managed: "molecule.managed",
  workspaceId: "molecule.workspace_id",
  orgId: "molecule.org_id",
  deployment: "molecule.deployment",
  /** What the resource is, where one engine holds more than workspaces (the control plane's `tenant`). */
  kind: "molecule.kind",
} as const;
