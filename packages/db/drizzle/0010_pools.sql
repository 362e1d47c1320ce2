-- Warm pools: the operator's target per (org, runtime, tier), and each pre-started member, from its start to its
-- claim (a member is claimed once: its id becomes the workspace's) or its removal.
CREATE TABLE pools (
  org_id text NOT NULL,
  runtime text NOT NULL,
  tier integer NOT NULL,
  size integer NOT NULL,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT pools_org_id_runtime_tier_pk PRIMARY KEY (org_id, runtime, tier)
);
CREATE TABLE pool_members (
  id text PRIMARY KEY,
  org_id text NOT NULL,
  runtime text NOT NULL,
  tier integer NOT NULL,
  state text NOT NULL,
  image text NOT NULL,
  handle jsonb,
  wait_token_hash text NOT NULL,
  agent_waiting_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  ready_at timestamptz,
  claimed_at timestamptz,
  CONSTRAINT pool_members_state_check CHECK (state IN ('starting', 'ready', 'claimed', 'removing'))
);
CREATE INDEX pool_members_pool_state_idx ON pool_members (org_id, runtime, tier, state);
