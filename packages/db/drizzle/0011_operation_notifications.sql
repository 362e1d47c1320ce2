-- A queued operation is announced on `molecule_changes` as 'operations:<workspace id>', so every replica's runner can
-- claim it at once instead of at its next poll (FOR UPDATE SKIP LOCKED still gives it to one). Only the insert: the
-- runner's own writes to the row (claim, lease, steps, end) announce nothing.
CREATE TRIGGER operations_notify_insert AFTER INSERT ON operations
  FOR EACH ROW EXECUTE FUNCTION molecule_notify_change('workspace_id');
