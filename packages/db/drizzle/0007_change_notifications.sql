-- Row changes other replicas cache (a workspace, its tokens) are announced on the channel `molecule_changes` as
-- '<table>:<workspace id>' by triggers, so no code path can forget to invalidate. NOTIFY is delivered at commit (and
-- not at all on rollback), and identical notifications in one transaction are folded into one.
-- A workspaces UPDATE notifies only when something besides heartbeat bookkeeping changed: a heartbeat write (which
-- moves last_heartbeat_at, and may touch updated_at) says nothing, while any column added later notifies by default.
CREATE FUNCTION molecule_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  row_key text;
BEGIN
  IF TG_OP = 'DELETE' THEN
    row_key := to_jsonb(OLD) ->> TG_ARGV[0];
  ELSE
    row_key := to_jsonb(NEW) ->> TG_ARGV[0];
  END IF;
  PERFORM pg_notify('molecule_changes', TG_TABLE_NAME || ':' || row_key);
  RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_notify_insert_delete AFTER INSERT OR DELETE ON workspaces
  FOR EACH ROW EXECUTE FUNCTION molecule_notify_change('id');
CREATE TRIGGER workspaces_notify_update AFTER UPDATE ON workspaces
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - ARRAY['last_heartbeat_at', 'updated_at']) IS DISTINCT FROM
        (to_jsonb(NEW) - ARRAY['last_heartbeat_at', 'updated_at']))
  EXECUTE FUNCTION molecule_notify_change('id');

CREATE TRIGGER workspace_tokens_notify AFTER INSERT OR UPDATE OR DELETE ON workspace_tokens
  FOR EACH ROW EXECUTE FUNCTION molecule_notify_change('workspace_id');
