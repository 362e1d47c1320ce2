-- Every reconcile pass (whichever replica ran it) and the first sighting of each unclaimed resource, so the stats
-- of any replica show the last pass and the orphan grace period survives restarts.
CREATE TABLE cp_reconcile_runs (
  id text PRIMARY KEY,
  replica text NOT NULL,
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  duration_ms integer NOT NULL,
  orphans integer NOT NULL,
  ghosts integer NOT NULL,
  deleted integer NOT NULL,
  report jsonb NOT NULL
);
CREATE INDEX cp_reconcile_runs_started_idx ON cp_reconcile_runs (started_at);
CREATE TABLE cp_orphan_sightings (
  backend text NOT NULL,
  kind text NOT NULL,
  provider_id text NOT NULL,
  first_seen_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  CONSTRAINT cp_orphan_sightings_backend_kind_provider_id_pk PRIMARY KEY (backend, kind, provider_id)
);
