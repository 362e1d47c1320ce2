import type { WorkspaceRow } from "@molecule/db";
import { mintToken, type Sealer } from "@molecule/identity";

/**
 * The agent's inbound token: minted at every registration (with the bearer token, so it rotates with it), answered to
 * the agent in `RegisterResponse.inbound_token`, and presented by the A2A proxy on every request it forwards
 * (`x-molecule-inbound-token`). An agent that refuses requests without it can only be reached through the proxy,
 * whatever network it shares with other workspaces.
 *
 * Kept as a random token sealed on the workspace row, not as a hash, nor derived as an HMAC of the workspace id:
 * - the proxy has to present the token itself, which a one-way hash of it cannot give back;
 * - an HMAC under a platform key stores nothing, but every agent's token would hang on that one key: rotating it
 *   would lock every agent out until it registered again. A sealed value keeps the key version it was sealed with and
 *   still opens after the secrets key rotates (`SECRETS_ENCRYPTION_OLD_KEYS`); a copy of the database alone does not
 *   reveal it; and it lives on the row the proxy reads anyway, so presenting it costs one AES-GCM open, no query.
 */
export type SealedInboundToken = Pick<WorkspaceRow, "inboundTokenSealed" | "inboundTokenKeyVersion">;

/** Binds the sealed value to its workspace: copied to another row, it does not open. */
const associatedData = (workspaceId: string) => `inbound:${workspaceId}`;

export function mintInboundToken(
  sealer: Sealer,
  workspaceId: string,
): { token: string; columns: SealedInboundToken } {
  const token = mintToken("mit");
  const { sealed, keyVersion } = sealer.seal(token, associatedData(workspaceId));
  return { token, columns: { inboundTokenSealed: sealed, inboundTokenKeyVersion: keyVersion } };
}

/** What a removed workspace keeps: nothing. */
export const NO_INBOUND_TOKEN: SealedInboundToken = {
  inboundTokenSealed: null,
  inboundTokenKeyVersion: null,
};

/**
 * The workspace's inbound token, or null when its agent registered before inbound tokens existed. A
 * `SealedValueError` (503 `secrets_key_unavailable`) when this process lacks the key version it was sealed with.
 */
export function openInboundToken(
  sealer: Sealer,
  row: Pick<WorkspaceRow, "id"> & SealedInboundToken,
): string | null {
  if (row.inboundTokenSealed === null || row.inboundTokenKeyVersion === null) return null;
  return sealer.open(row.inboundTokenSealed, row.inboundTokenKeyVersion, associatedData(row.id));
}
