import type { Sealer, SecretsKeyNames } from "@molecule/tenant-platform/crypto";

/** The variables the control plane's key ring comes from, named in its errors. */
export const CP_SECRETS_KEY_NAMES: SecretsKeyNames = {
  key: "CP_SECRETS_ENCRYPTION_KEY",
  oldKeys: "CP_SECRETS_ENCRYPTION_OLD_KEYS",
};

/** Associated data binds a sealed value to its row: copied elsewhere, it does not open. */
export const tenantEnvAad = (orgId: string) => `cp:org:${orgId}:tenant-env`;
export const operationInputAad = (operationId: string) => `cp:op:${operationId}:input`;

export function sealJson(
  sealer: Sealer,
  value: unknown,
  aad: string,
): { sealed: string; keyVersion: number } {
  return sealer.seal(JSON.stringify(value), aad);
}

/** Opens with the key of the version stored beside the value; a `SealedValueError` when this process cannot. */
export function openJson<T>(sealer: Sealer, sealed: string, keyVersion: number, aad: string): T {
  return JSON.parse(sealer.open(sealed, keyVersion, aad)) as T;
}
