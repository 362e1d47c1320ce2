import type { RequestVariables } from "@molecule/service-kit/http";

/** A tenant whose signed request was verified. */
export interface TenantCaller {
  orgId: string;
  slug: string;
}

export interface AppEnv {
  Variables: RequestVariables & {
    tenant: TenantCaller;
    /** The exact body bytes the signature covered; JSON is parsed from these, never read twice. */
    rawBody: Uint8Array;
  };
}
