import type { OperationRow } from "@molecule/db";
import type { Sealer } from "@molecule/identity";

/**
 * An operation's secret input (the boot or registration token it hands out), sealed in its row under the operation's
 * id with the key version beside it, so a retry after a crash, or a replay of the request, gets the same value back
 * even after the secrets key has rotated.
 */
const aad = (operationId: string) => `op:${operationId}`;

export function sealOperationInput(
  sealer: Sealer,
  operationId: string,
  value: string,
): Pick<OperationRow, "sealedInput" | "sealedKeyVersion"> {
  const { sealed, keyVersion } = sealer.seal(value, aad(operationId));
  return { sealedInput: sealed, sealedKeyVersion: keyVersion };
}

/** The input, opened with its own key version (a `SealedValueError` if this process lacks it); null if there is none. */
export function openOperationInput(
  sealer: Sealer,
  operation: Pick<OperationRow, "id" | "sealedInput" | "sealedKeyVersion">,
): string | null {
  if (!operation.sealedInput) return null;
  return operation.sealedKeyVersion === null
    ? sealer.openUnversioned(operation.sealedInput, aad(operation.id))
    : sealer.open(operation.sealedInput, operation.sealedKeyVersion, aad(operation.id));
}
