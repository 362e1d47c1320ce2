import { randomBytes } from "node:crypto";

/** A tenant's credential for the control plane: 32 random bytes, url-safe, prefixed so it explains itself. */
export const mintTenantCredential = () => `mct_${randomBytes(32).toString("base64url")}`;
/** The ADMIN_TOKEN a tenant platform is started with (the tenant's own admin API). */
export const mintTenantAdminToken = () => `mat_${randomBytes(32).toString("base64url")}`;
/** A tenant's SECRETS_ENCRYPTION_KEY: 32 random bytes as hex. */
export const mintSecretsKey = () => randomBytes(32).toString("hex");
