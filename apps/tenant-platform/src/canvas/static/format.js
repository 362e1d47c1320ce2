/** "4 s", "3 min", "2 h 5 min": how long ago / how long, for people. */
export function duration(ms) {
  if (!Number.isFinite(ms)) return "–";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const seconds = ms / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d`;
}

export function age(iso, now = Date.now()) {
  if (!iso) return "never";
  const ms = now - Date.parse(iso);
  if (ms < 1000) return "just now";
  return `${duration(Math.floor(ms / 1000) * 1000)} ago`;
}

export function clockTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

export function dateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString([], { hour12: false });
}

/** A one-line description of a platform event's data. */
export function describeEvent(event) {
  const data = event.data ?? {};
  switch (event.type) {
    case "workspace.status":
      return `${data.from ?? "∅"} → ${data.to}${data.reason ? ` (${data.reason})` : ""}`;
    case "workspace.heartbeat":
      return `heartbeat ${data.status ?? "ok"}`;
    case "workspace.heartbeat_missed":
      return `no heartbeat since ${clockTime(data.lastHeartbeatAt)}`;
    case "operation.step":
      return `${data.kind} · ${data.name} · ${duration(data.durationMs)}`;
    case "operation.finished":
      return `${data.kind} ${data.status}${data.error?.message ? `: ${data.error.message}` : ""}`;
    case "a2a.delivery":
      return `A2A ${data.method ?? "delivery"}${data.durationMs !== undefined ? ` · ${duration(data.durationMs)}` : ""}`;
    case "a2a.wake_wait":
      return `A2A waited for a wake · ${data.outcome ?? ""}${data.waitedMs !== undefined ? ` · ${duration(data.waitedMs)}` : ""}`;
    default:
      return "";
  }
}
