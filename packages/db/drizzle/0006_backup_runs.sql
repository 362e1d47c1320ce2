-- The tenant's record of its database backups (TENANT_BACKUP_S3_PREFIX): one row per attempt; the latest tells every
-- replica whether a backup is due.
CREATE TABLE backup_runs (
  id bigserial PRIMARY KEY,
  status text NOT NULL,
  location text NOT NULL,
  format text NOT NULL,
  size_bytes bigint,
  sha256 text,
  error text,
  started_at timestamptz NOT NULL,
  finished_at timestamptz,
  reported_at timestamptz,
  CONSTRAINT backup_runs_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);
CREATE INDEX backup_runs_started_idx ON backup_runs (started_at);
