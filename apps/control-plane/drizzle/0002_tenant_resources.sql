-- The resource audit of what the control plane's backends create: each resource about to be created (intent), then
-- made (claimed, with the provider's id), then destroyed (released). subject_id: the workspace id, or the org id.
CREATE TABLE cp_tenant_resources (
  subject_id text NOT NULL,
  org_id text NOT NULL,
  backend text NOT NULL,
  kind text NOT NULL,
  name text NOT NULL,
  provider_id text,
  state text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  released_at timestamptz,
  CONSTRAINT cp_tenant_resources_subject_id_kind_name_pk PRIMARY KEY (subject_id, kind, name),
  CONSTRAINT cp_tenant_resources_state_check CHECK (state IN ('intent', 'claimed', 'released'))
);
CREATE INDEX cp_tenant_resources_open_idx ON cp_tenant_resources (backend, state);
