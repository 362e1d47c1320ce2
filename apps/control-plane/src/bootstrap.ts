import { configuredOrPersisted, type DataDirSecret } from "@molecule/db/data-dir";
import { mintHexKey, mintToken } from "@molecule/identity";
import { isStrictEnvironment } from "@molecule/service-kit/config";
import type { ControlPlaneConfig } from "./config.ts";

/** Files in MOLECULE_DATA_DIR holding what development generated. */
export const SECRET_FILES = {
  adminToken: "admin-token",
  provisionSharedSecret: "provision-shared-secret",
  secretsKey: "secrets-key",
} as const;

export interface ControlPlaneSecrets {
  adminToken: DataDirSecret;
  provisionSharedSecret: DataDirSecret;
  secretsKey: DataDirSecret;
}

/**
 * The configured admin token, signing master secret and sealing key; in development any that is not configured is
 * generated once into the data folder and reused on every later start (a new secrets key would leave sealed tenant
 * environments unreadable, a new shared secret would break every running tenant's signatures). loadConfig has
 * already refused production without them.
 */
export function resolveSecrets(config: ControlPlaneConfig): ControlPlaneSecrets {
  const dir = config.data.dir;
  if (isStrictEnvironment(config.environment)) {
    const { adminToken, provisionSharedSecret } = config.auth;
    if (!adminToken || !provisionSharedSecret || !config.secrets.key) {
      throw new Error("production never generates secrets: configure them (see loadConfig)");
    }
  }
  return {
    adminToken: configuredOrPersisted(config.auth.adminToken, dir, SECRET_FILES.adminToken, () =>
      mintToken("mca"),
    ),
    provisionSharedSecret: configuredOrPersisted(
      config.auth.provisionSharedSecret,
      dir,
      SECRET_FILES.provisionSharedSecret,
      mintHexKey,
    ),
    secretsKey: configuredOrPersisted(config.secrets.key, dir, SECRET_FILES.secretsKey, mintHexKey),
  };
}
