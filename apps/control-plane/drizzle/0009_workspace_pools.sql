-- Warm pool members a tenant has the control plane make: the pool they were made for, and when a start claimed them.
ALTER TABLE cp_workspaces ADD COLUMN pool text;
ALTER TABLE cp_workspaces ADD COLUMN pool_claimed_at timestamptz;
