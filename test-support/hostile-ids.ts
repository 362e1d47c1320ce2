/**
 * Strings a client might send where a workspace id belongs: path tricks, another org's resource names, percent- and
 * unicode-encoded separators, control characters, wrong lengths and cases, another kind's id. None is a valid id.
 */
export const HOSTILE_WORKSPACE_IDS: readonly string[] = [
  "",
  "../../etc",
  "..",
  "tenant-victim",
  "tenant-victim-data",
  "ws-abc",
  "ws_..%2f",
  "ws_../../../../../../../etc/passwd",
  `ws_${"a".repeat(25)}\u0000`,
  `ws_${"a".repeat(25)}é`,
  `ws_${"a".repeat(24)}\u202e`,
  `ws_${"a".repeat(25)}\n`,
  `ws_${"A".repeat(26)}`,
  `ws_${"a".repeat(27)}`,
  `ws_${"a".repeat(25)}`,
  `ws_${"a".repeat(4000)}`,
  ` ws_${"a".repeat(26)}`,
  `ws_${"a".repeat(26)} `,
  `ws_${"a".repeat(13)}%2e${"a".repeat(10)}`,
  `ws_${"a".repeat(12)}/${"a".repeat(13)}`,
  `op_${"a".repeat(26)}`,
];
