-- The control plane's tables carry a cp_ prefix so its database may share a server (or a database) with a tenant's.
CREATE TYPE cp_org_status AS ENUM ('provisioning', 'ready', 'failed', 'deleting', 'deleted');
CREATE TYPE cp_operation_kind AS ENUM ('provision_tenant', 'destroy_org', 'provision', 'start', 'stop', 'suspend', 'destroy');
CREATE TYPE cp_operation_status AS ENUM ('pending', 'running', 'succeeded', 'failed');

CREATE TABLE cp_orgs (
  id text PRIMARY KEY,
  slug text NOT NULL,
  name text NOT NULL,
  status cp_org_status NOT NULL,
  tenant_handle jsonb,
  tenant_url text,
  tenant_env_sealed text,
  tenant_env_key_version integer,
  create_idempotency_key text,
  create_request_hash text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz
);
-- A deleted org stays as a tombstone (id, slug, name, timestamps); its slug may be taken again.
CREATE UNIQUE INDEX cp_orgs_live_slug_idx ON cp_orgs (slug) WHERE status <> 'deleted';
CREATE UNIQUE INDEX cp_orgs_create_key_idx ON cp_orgs (create_idempotency_key);

CREATE TABLE cp_tenant_credentials (
  token_hash text PRIMARY KEY,
  org_id text NOT NULL REFERENCES cp_orgs (id),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cp_tenant_credentials_org_idx ON cp_tenant_credentials (org_id);

CREATE TABLE cp_boot_events (
  id bigserial PRIMARY KEY,
  org_id text NOT NULL REFERENCES cp_orgs (id),
  stage text NOT NULL,
  detail text,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cp_boot_events_org_idx ON cp_boot_events (org_id, id);

CREATE TABLE cp_workspaces (
  id text PRIMARY KEY,
  org_id text NOT NULL REFERENCES cp_orgs (id),
  runtime text NOT NULL,
  tier integer NOT NULL,
  state text NOT NULL,
  handle jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cp_workspaces_org_idx ON cp_workspaces (org_id);

CREATE TABLE cp_operations (
  id text PRIMARY KEY,
  org_id text NOT NULL REFERENCES cp_orgs (id),
  workspace_id text,
  -- What the operation acts on (the workspace id, or org:<id>): one operation per subject runs at a time.
  subject text NOT NULL,
  kind cp_operation_kind NOT NULL,
  status cp_operation_status NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  steps jsonb NOT NULL DEFAULT '[]'::jsonb,
  result jsonb,
  error jsonb,
  idempotency_key text,
  request_hash text,
  sealed_input text,
  sealed_key_version integer,
  locked_by text,
  locked_until timestamptz,
  run_after timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE UNIQUE INDEX cp_operations_idempotency_idx ON cp_operations (org_id, idempotency_key);
CREATE INDEX cp_operations_claim_idx ON cp_operations (status, run_after);
CREATE INDEX cp_operations_subject_idx ON cp_operations (subject, created_at);

CREATE TABLE cp_request_nonces (
  org_id text NOT NULL REFERENCES cp_orgs (id),
  nonce text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (org_id, nonce)
);
CREATE INDEX cp_request_nonces_expiry_idx ON cp_request_nonces (expires_at);
