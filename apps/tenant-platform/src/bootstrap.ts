import { randomBytes } from "node:crypto";

/**
 * The tenant's development secrets: the admin token and secrets key are generated once into the data folder
 * (`@molecule/db/data-dir`, shared with the control plane); production refuses to start without them (loadConfig).
 */
export { makeHexKey as makeSecretsKey, persistedSecret } from "@molecule/db/data-dir";

export const makeAdminToken = () => `mat_${randomBytes(32).toString("base64url")}`;
