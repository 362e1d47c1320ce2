/**
 * Reads Prometheus exposition text as tests assert on it: the sum of the samples of `name` whose labels include
 * every one given (0 when none), so a test compares counts before and after what it did.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries(
      [...(match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) sum += Number(match[3]);
  }
  return sum;
}

/** Every value the label `label` takes among the samples of `name`. */
export function labelValues(text: string, name: string, label: string): string[] {
  const values = new Set<string>();
  const pattern = new RegExp(`^${name}\\{.*\\b${label}="((?:[^"\\\\]|\\\\.)*)"`);
  for (const line of text.split("\n")) {
    const match = pattern.exec(line);
    if (match?.[1] !== undefined) values.add(match[1]);
  }
  return [...values];
}
