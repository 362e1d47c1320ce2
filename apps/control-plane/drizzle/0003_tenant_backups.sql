-- The database backups tenants report (POST /cp/tenants/backup-report), succeeded and failed: GET /cp/admin/backups
-- shows the last one per tenant. A retried report of the same location is ignored.
CREATE TABLE cp_tenant_backups (
  id bigserial PRIMARY KEY,
  org_id text NOT NULL REFERENCES cp_orgs (id),
  outcome text NOT NULL,
  location text NOT NULL,
  format text NOT NULL,
  size_bytes bigint,
  sha256 text,
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  error text,
  received_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT cp_tenant_backups_outcome_check CHECK (outcome IN ('succeeded', 'failed'))
);
CREATE UNIQUE INDEX cp_tenant_backups_org_location_idx ON cp_tenant_backups (org_id, location);
CREATE INDEX cp_tenant_backups_org_finished_idx ON cp_tenant_backups (org_id, finished_at);
