import type { PlatformSettings } from "./deps.ts";
import { heartbeatIntervalSeconds } from "./liveness.ts";

/**
 * The environment every managed workspace starts with: the operator's WORKSPACE_ENV, then its secrets, then what the
 * platform owns (which neither may override). The caller adds the one credential its agent starts with (a boot token,
 * or a warm pool member's pool token).
 */
export function workspaceEnv(
  settings: PlatformSettings,
  workspaceId: string,
  secrets: Readonly<Record<string, string>> = {},
): Record<string, string> {
  return {
    ...settings.workspaceEnv,
    ...secrets,
    WORKSPACE_ID: workspaceId,
    PLATFORM_URL: settings.publicUrl,
    HEARTBEAT_INTERVAL_SECONDS: String(heartbeatIntervalSeconds(settings.staleAfterMs)),
  };
}

/** The image reference a runtime's new workspaces start on, when the platform knows it (docker, flyio). */
export function workspaceImage(settings: PlatformSettings, runtime: string): string {
  const image = settings.workspaceImage;
  return image ? `${image.prefix}${runtime}:${image.tag}` : `${runtime}:backend-default`;
}
