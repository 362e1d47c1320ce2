/**
 * The control plane's admin surface for operating tenants (CP_ADMIN_API_TOKEN): stop, start and redeploy an org's
 * tenant, mark an org canary, and the AMI pins EC2 instances boot from. The operator CLI parses the same schemas.
 */
import { z } from "zod";
import { ImageRef, OrgOperationView, OrgView } from "./controlplane.ts";

/** The durable control-plane operations an org can have (one at a time per org, like every operation). */
export const ORG_OPERATION_KINDS = [
  "provision_tenant",
  "destroy_org",
  "stop_tenant",
  "start_tenant",
  "redeploy_tenant",
] as const;
export const OrgOperationKind = z.enum(ORG_OPERATION_KINDS);
export type OrgOperationKind = z.infer<typeof OrgOperationKind>;

/** `POST /cp/admin/tenants/:slug/redeploy`: no image means TENANT_IMAGE (CANARY_TENANT_IMAGE for a canary org). */
export const RedeployTenantBody = z.strictObject({ image: ImageRef.optional() });
export type RedeployTenantBody = z.infer<typeof RedeployTenantBody>;

/** `PATCH /cp/admin/orgs/:slug`. */
export const PatchOrgBody = z.strictObject({ is_canary: z.boolean() });
export type PatchOrgBody = z.infer<typeof PatchOrgBody>;

/**
 * The answer (202) of stop, start and redeploy: the org and the queued operation, which `GET /cp/orgs/:slug` shows
 * until it ends. Asking again while one of the same kind is pending or running answers that one.
 */
export const TenantOperationAccepted = z.object({ org: OrgView, operation: OrgOperationView });
export type TenantOperationAccepted = z.infer<typeof TenantOperationAccepted>;

// ---- AMI pins ----

/** The runtime an AMI is pinned for: `tenant-platform` for tenants, a workspace runtime name otherwise. */
export const AmiRuntime = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "runtime must be 1-63 lower-case letters, digits, dots, dashes");
export const AwsRegionName = z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, "region must be such as us-east-1");
export const AmiId = z
  .string()
  .regex(/^ami-[0-9a-f]{8,17}$/, "ami_id must be an AMI id such as ami-0123abcd");

export const PutAmiPinBody = z.strictObject({ ami_id: AmiId });
export type PutAmiPinBody = z.infer<typeof PutAmiPinBody>;

export const AmiPin = z.object({
  runtime: z.string(),
  region: z.string(),
  ami_id: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type AmiPin = z.infer<typeof AmiPin>;

/** `GET /cp/admin/ami-pins`, ordered by runtime then region. */
export const AmiPinList = z.object({ pins: z.array(AmiPin) });

/** `PUT /cp/admin/ami-pins/:runtime/:region`. */
export const AmiPinAnswer = z.object({ pin: AmiPin });
/** `PATCH /cp/admin/orgs/:slug`. */
export const OrgAnswer = z.object({ org: OrgView });
