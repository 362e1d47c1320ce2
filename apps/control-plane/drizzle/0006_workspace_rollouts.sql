-- Workspace image rollouts over tenants' APIs (one tenant, or the fleet with canaries first), run by the durable
-- runner like cp_operations: one rollout at a time (one subject), its plan fixed when it is asked for, each tenant's
-- result written as it finishes so a resumed attempt skips finished tenants. Not tied to one org: an org deleted
-- during a rollout leaves the rollout's record whole.
CREATE TABLE cp_rollouts (
  id text PRIMARY KEY,
  kind text NOT NULL,
  subject text NOT NULL,
  status cp_operation_status NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  steps jsonb NOT NULL DEFAULT '[]'::jsonb,
  error jsonb,
  plan jsonb NOT NULL,
  tenants jsonb NOT NULL DEFAULT '{}'::jsonb,
  cancel_requested_at timestamptz,
  locked_by text,
  locked_until timestamptz,
  run_after timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  CONSTRAINT cp_rollouts_kind_check CHECK (kind IN ('tenant', 'fleet'))
);
CREATE INDEX cp_rollouts_claim_idx ON cp_rollouts (status, run_after);
CREATE INDEX cp_rollouts_created_idx ON cp_rollouts (created_at);
