import type { Sealer } from "@molecule/tenant-platform/crypto";

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

export function openJson<T>(sealer: Sealer, sealed: string, keyVersion: number, aad: string): T {
  return JSON.parse(sealer.open(sealed, keyVersion, aad)) as T;
}
