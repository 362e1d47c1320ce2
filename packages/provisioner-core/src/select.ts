/**
 * Which backend the tenant platform uses (`CONTAINER_BACKEND`, else `controlplane` when `MOLECULE_ORG_ID` is set, else
 * `docker`; the README's configuration table says the same). Pure: the config loader passes the
 * relevant settings (environment variable names as keys); empty strings count as unset.
 */
export interface BackendSettings {
  CONTAINER_BACKEND?: string | undefined;
  MOLECULE_ORG_ID?: string | undefined;
  FLY_API_TOKEN?: string | undefined;
  FLY_WORKSPACE_APP?: string | undefined;
  FLY_REGION?: string | undefined;
  CP_PROVISION_URL?: string | undefined;
}

export const BACKENDS = ["docker", "flyio", "controlplane"] as const;
export type BackendName = (typeof BACKENDS)[number];

export type BackendSelection =
  | { backend: "docker" }
  | { backend: "flyio"; flyApiToken: string; flyWorkspaceApp: string; flyRegion: string }
  /** `cpProvisionUrl` is undefined when the default control-plane URL applies. */
  | { backend: "controlplane"; cpProvisionUrl: string | undefined };

export const DEFAULT_FLY_REGION = "ord";

/** Misconfiguration that must stop start-up; the message is one line naming the variable. */
export class BackendSelectionError extends Error {
  constructor(
    readonly variable: keyof BackendSettings,
    message: string,
  ) {
    super(message);
    this.name = "BackendSelectionError";
  }
}

function value(settings: BackendSettings, key: keyof BackendSettings): string | undefined {
  const raw = settings[key]?.trim();
  return raw ? raw : undefined;
}

function required(settings: BackendSettings, key: keyof BackendSettings, why: string): string {
  const found = value(settings, key);
  if (!found) throw new BackendSelectionError(key, `${key} is required ${why}`);
  return found;
}

export function selectBackend(settings: BackendSettings): BackendSelection {
  const requested = value(settings, "CONTAINER_BACKEND");
  const backend: string = requested ?? (value(settings, "MOLECULE_ORG_ID") ? "controlplane" : "docker");
  switch (backend) {
    case "docker":
      return { backend: "docker" };
    case "flyio":
      return {
        backend: "flyio",
        flyApiToken: required(settings, "FLY_API_TOKEN", "when CONTAINER_BACKEND=flyio"),
        flyWorkspaceApp: required(settings, "FLY_WORKSPACE_APP", "when CONTAINER_BACKEND=flyio"),
        flyRegion: value(settings, "FLY_REGION") ?? DEFAULT_FLY_REGION,
      };
    case "controlplane":
      return { backend: "controlplane", cpProvisionUrl: value(settings, "CP_PROVISION_URL") };
    default:
      throw new BackendSelectionError(
        "CONTAINER_BACKEND",
        `CONTAINER_BACKEND="${backend}" is not a known backend (expected one of: ${BACKENDS.join(", ")})`,
      );
  }
}
