import type { Handle, ProvisionContext, Provisioner, WorkspaceSpec } from "./provisioner.ts";

export interface RebuildContext extends Omit<ProvisionContext, "recreate" | "idempotencyKey"> {
  /** The idempotency key of each backend call (the caller's operation, attempt and call). */
  callKey: (call: "stop" | "start") => string;
  /** Runs between the stop and the start (the caller records the workspace as stopped). */
  afterStop?: () => Promise<void>;
}

/** The image a handle names, where the backend keeps one (docker does). */
function imageOf(handle: Handle | null): string | undefined {
  return typeof handle?.image === "string" ? handle.image : undefined;
}

/**
 * Rebuilds a workspace from its spec on the backend's current image, keeping its volume and its identity (id, name,
 * labels, secrets): a graceful stop, then a start that recreates the process instead of resuming it. Every backend
 * gets the same sequence through the Provisioner interface (docker: a new container on the same volume; Fly: a new
 * machine on the same volume; the controlplane backend asks the control plane for the same). A restart and a
 * redeploy both run it; the image step says which image the workspace ran before and runs now.
 */
export async function rebuildWorkspace(
  provisioner: Provisioner,
  spec: WorkspaceSpec,
  handle: Handle | null,
  ctx: RebuildContext,
): Promise<Handle> {
  const { callKey, afterStop, ...shared } = ctx;
  const ref = { workspaceId: spec.workspaceId, orgId: spec.orgId, handle };
  await provisioner.stop(ref, { ...shared, idempotencyKey: callKey("stop") });
  await afterStop?.();
  const rebuilt = await provisioner.start(spec, handle, {
    ...shared,
    recreate: true,
    idempotencyKey: callKey("start"),
  });
  const before = imageOf(handle);
  const after = imageOf(rebuilt);
  if (after) shared.step?.("image", before && before !== after ? `${before} -> ${after}` : after);
  return rebuilt;
}
