-- What a tenant's per-request authentication reads (its credential's hash and its org's status) is announced on the
-- channel `molecule_changes` as '<table>:<org id>' by triggers, so a replica caching it can never miss a change
-- another replica made. NOTIFY is delivered at commit; identical notifications in one transaction are folded.
CREATE FUNCTION cp_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER cp_orgs_notify_insert_delete AFTER INSERT OR DELETE ON cp_orgs
  FOR EACH ROW EXECUTE FUNCTION cp_notify_change('id');
CREATE TRIGGER cp_orgs_notify_update AFTER UPDATE ON cp_orgs
  FOR EACH ROW
  WHEN ((to_jsonb(OLD) - 'updated_at') IS DISTINCT FROM (to_jsonb(NEW) - 'updated_at'))
  EXECUTE FUNCTION cp_notify_change('id');

CREATE TRIGGER cp_tenant_credentials_notify AFTER INSERT OR UPDATE OR DELETE ON cp_tenant_credentials
  FOR EACH ROW EXECUTE FUNCTION cp_notify_change('org_id');
