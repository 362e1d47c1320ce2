CREATE TYPE workspace_status AS ENUM ('provisioning', 'awaiting_agent', 'online', 'degraded', 'offline', 'stopping', 'stopped', 'suspended', 'failed', 'removing', 'removed');
CREATE TYPE operation_kind AS ENUM ('provision', 'start', 'stop', 'restart', 'suspend', 'destroy');
CREATE TYPE operation_status AS ENUM ('pending', 'running', 'succeeded', 'failed');
CREATE TYPE token_kind AS ENUM ('boot', 'auth');

CREATE TABLE workspaces (
  id text PRIMARY KEY,
  org_id text NOT NULL,
  name text NOT NULL,
  runtime text NOT NULL,
  tier integer NOT NULL,
  backend text NOT NULL,
  status workspace_status NOT NULL,
  status_reason text,
  needs_restart boolean NOT NULL DEFAULT false,
  url text,
  agent_card jsonb,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  handle jsonb,
  last_heartbeat_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_org_status_idx ON workspaces (org_id, status);

CREATE TABLE operations (
  id text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id),
  kind operation_kind NOT NULL,
  status operation_status NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  steps jsonb NOT NULL DEFAULT '[]'::jsonb,
  error jsonb,
  idempotency_key text,
  request_hash text,
  sealed_input text,
  locked_by text,
  locked_until timestamptz,
  run_after timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE UNIQUE INDEX operations_idempotency_key_idx ON operations (idempotency_key);
CREATE INDEX operations_claim_idx ON operations (status, run_after);
CREATE INDEX operations_workspace_idx ON operations (workspace_id, created_at);

CREATE TABLE workspace_tokens (
  token_hash text PRIMARY KEY,
  workspace_id text NOT NULL REFERENCES workspaces (id),
  kind token_kind NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  spent_at timestamptz
);
CREATE INDEX workspace_tokens_workspace_idx ON workspace_tokens (workspace_id);

CREATE TABLE workspace_secrets (
  workspace_id text NOT NULL REFERENCES workspaces (id),
  key text NOT NULL,
  sealed text NOT NULL,
  key_version integer NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, key)
);
