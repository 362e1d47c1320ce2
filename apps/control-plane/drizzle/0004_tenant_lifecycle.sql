-- Operating tenants: stop, start and redeploy are org operations; a stopped tenant's org is `stopped`; the image a
-- tenant reports with its boot events (and the one it last reported `ready` with) is kept.
ALTER TYPE cp_operation_kind ADD VALUE 'stop_tenant';
ALTER TYPE cp_operation_kind ADD VALUE 'start_tenant';
ALTER TYPE cp_operation_kind ADD VALUE 'redeploy_tenant';
ALTER TYPE cp_org_status ADD VALUE 'stopped';
ALTER TABLE cp_boot_events ADD COLUMN image text;
ALTER TABLE cp_orgs ADD COLUMN tenant_image text;
ALTER TABLE cp_operations ADD COLUMN input jsonb;
