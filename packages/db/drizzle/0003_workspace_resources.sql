-- The resource audit: each resource a backend is about to create (intent), then made (claimed, with the provider's
-- id), then destroyed (released). The reconciler's claims beside the workspace rows.
CREATE TABLE workspace_resources (
  workspace_id text NOT NULL,
  org_id text NOT NULL,
  backend text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  provider_id text,
  state text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  released_at timestamptz,
  CONSTRAINT workspace_resources_workspace_id_kind_name_pk PRIMARY KEY (workspace_id, kind, name),
  CONSTRAINT workspace_resources_state_check CHECK (state IN ('intent', 'claimed', 'released'))
);
CREATE INDEX workspace_resources_open_idx ON workspace_resources (backend, state);
