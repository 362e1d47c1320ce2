-- A warm pool member the filler suspended once its agent waited (backends that can suspend, Fly): it costs no CPU
-- while it waits, is resumed at its claim, and its agent's silence meanwhile is not taken for death.
ALTER TABLE pool_members ADD COLUMN suspended_at timestamptz;
-- `suspending`: the filler is suspending a ready member; a claim passes it by meanwhile.
ALTER TABLE pool_members DROP CONSTRAINT pool_members_state_check;
ALTER TABLE pool_members ADD CONSTRAINT pool_members_state_check
  CHECK (state IN ('starting', 'ready', 'suspending', 'claimed', 'removing'));
