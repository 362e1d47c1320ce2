-- Idle suspend: how long a workspace may sit idle before it is suspended (NULL: the platform's IDLE_SUSPEND_AFTER,
-- 0: never), and when it last had an A2A message or reported activity.
ALTER TABLE workspaces ADD COLUMN idle_suspend_seconds integer;
ALTER TABLE workspaces ADD COLUMN last_activity_at timestamptz;

-- last_activity_at is bookkeeping written in batches like last_heartbeat_at: a write of it alone must not drop what
-- the replicas keep of the workspace (its A2A route, its heartbeat token), or every message would invalidate them.
DROP TRIGGER workspaces_notify_update ON workspaces;
CREATE TRIGGER workspaces_notify_update AFTER UPDATE ON workspaces
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - ARRAY['last_heartbeat_at', 'last_activity_at', 'updated_at']) IS DISTINCT FROM
        (to_jsonb(NEW) - ARRAY['last_heartbeat_at', 'last_activity_at', 'updated_at']))
  EXECUTE FUNCTION molecule_notify_change('id');
