/**
 * How `molecule-cp` prints for people: aligned tables and key/value blocks. Every value from the server passes through
 * `cell`, so a name or message holding control characters cannot move the cursor or recolour an operator's terminal.
 */

export type Cell = string | number | boolean | null | undefined;

/** One line of printable text: control characters become `?`, nothing (null, undefined, "") becomes `-`. */
export function cell(value: Cell): string {
  if (value === null || value === undefined || value === "") return "-";
  if (typeof value === "boolean") return value ? "yes" : "no";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  return String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => Cell;
}

/** A header line and one line per row, columns padded to their widest value, two spaces apart. */
export function table<Row>(columns: readonly Column<Row>[], rows: readonly Row[]): string {
  const lines = [
    columns.map((column) => column.header),
    ...rows.map((row) => columns.map((column) => cell(column.value(row)))),
  ];
  const widths = columns.map((_, i) => Math.max(...lines.map((line) => (line[i] ?? "").length)));
  return lines
    .map((line) =>
      line
        .map((text, i) => (i === line.length - 1 ? text : text.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")
    .concat("\n");
}

/** `key  value` lines, keys padded to the longest. */
export function keyValues(pairs: readonly (readonly [string, Cell])[]): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length));
  return pairs
    .map(([key, value]) => `${key.padEnd(width)}  ${cell(value)}`.trimEnd())
    .join("\n")
    .concat("\n");
}

/** `3 s`, `4 min 12 s`, `2 h 5 min` */
export function duration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return ms < 1000 ? `${ms} ms` : `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The answer as sent, for scripts: indented JSON and a final newline. */
export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
