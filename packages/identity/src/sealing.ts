/**
 * Sealing: AES-256-GCM with associated data and a versioned key ring. The sealed format,
 * `base64url(iv).base64url(tag).base64url(ciphertext)` with the key version stored beside it, is what rows already
 * hold: it does not change.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { DomainError } from "@molecule/contracts";

/** A 32-byte key given as 64 hex characters or base64; `name` is the variable it came from, for the error. */
export function parseKey(text: string, name: string): Buffer {
  const key = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  if (key.length !== 32) throw new Error(`${name} must be 32 bytes, as 64 hex characters or base64`);
  return key;
}

/** Which configuration variables hold the keys, so errors name what an operator sets. */
export interface SecretsKeyNames {
  key: string;
  oldKeys: string;
}

/** The tenant platform's key ring variables. */
export const TENANT_SECRETS_KEY_NAMES: SecretsKeyNames = {
  key: "SECRETS_ENCRYPTION_KEY",
  oldKeys: "SECRETS_ENCRYPTION_OLD_KEYS",
};

/** The control plane's key ring variables. */
export const CP_SECRETS_KEY_NAMES: SecretsKeyNames = {
  key: "CP_SECRETS_ENCRYPTION_KEY",
  oldKeys: "CP_SECRETS_ENCRYPTION_OLD_KEYS",
};

/**
 * A sealed value this process cannot open: its key version is not in the key ring, or the key configured under that
 * version does not open it. The message names the version and what to configure, never the sealed value; answered as
 * 503 `secrets_key_unavailable`, and an operation that needs the value fails with that code and message.
 */
export class SealedValueError extends DomainError {
  constructor(
    /** null for a value stored without its version. */
    readonly keyVersion: number | null,
    message: string,
  ) {
    super("secrets_key_unavailable", message, { key_version: keyVersion });
    this.name = "SealedValueError";
  }
}

/**
 * AES-256-GCM with a versioned key ring: the current key seals, the current and old keys open. Every sealed value is
 * stored with the version that sealed it and opened with that version's key, so rotating the key leaves older rows
 * readable as long as their key stays in the old keys. The associated data binds a sealed value to where it belongs
 * (workspace id and key name), so a value copied to another row does not open.
 */
export class Sealer {
  constructor(
    private readonly keys: ReadonlyMap<number, Buffer>,
    readonly currentVersion: number,
    private readonly names: SecretsKeyNames = TENANT_SECRETS_KEY_NAMES,
  ) {
    if (!keys.has(currentVersion)) throw new Error(`no secrets key for version ${currentVersion}`);
  }

  seal(plaintext: string, associatedData: string): { sealed: string; keyVersion: number } {
    const key = this.keys.get(this.currentVersion) as Buffer;
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", key, iv);
    cipher.setAAD(Buffer.from(associatedData));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    const sealed = [iv, cipher.getAuthTag(), body].map((part) => part.toString("base64url")).join(".");
    return { sealed, keyVersion: this.currentVersion };
  }

  /** Opens a value with the key of the version it was sealed with; a `SealedValueError` when that cannot be done. */
  open(sealed: string, keyVersion: number, associatedData: string): string {
    const key = this.keys.get(keyVersion);
    if (!key) {
      throw new SealedValueError(
        keyVersion,
        `sealed with key version ${keyVersion}, which this process does not have: ` +
          `add that key to ${this.names.oldKeys} (as ${keyVersion}:<key>)`,
      );
    }
    const opened = decrypt(key, sealed, associatedData);
    if (opened === null) {
      const variable = keyVersion === this.currentVersion ? this.names.key : this.names.oldKeys;
      throw new SealedValueError(
        keyVersion,
        `sealed with key version ${keyVersion}, which the key configured for that version does not open ` +
          `(another key under that version in ${variable}, or an altered value)`,
      );
    }
    return opened;
  }

  /** Seals a value as its JSON text. */
  sealJson(value: unknown, associatedData: string): { sealed: string; keyVersion: number } {
    return this.seal(JSON.stringify(value), associatedData);
  }

  /** Opens a value `sealJson` sealed; a `SealedValueError` when this process cannot. */
  openJson<T>(sealed: string, keyVersion: number, associatedData: string): T {
    return JSON.parse(this.open(sealed, keyVersion, associatedData)) as T;
  }

  /**
   * Opens a value stored without its key version (written before the version was recorded beside it): each key of the
   * ring is tried, the current one first; AES-GCM's tag tells the right one.
   */
  openUnversioned(sealed: string, associatedData: string): string {
    const versions = [this.currentVersion, ...[...this.keys.keys()].filter((v) => v !== this.currentVersion)];
    for (const version of versions) {
      const opened = decrypt(this.keys.get(version) as Buffer, sealed, associatedData);
      if (opened !== null) return opened;
    }
    throw new SealedValueError(
      null,
      `a value stored without its key version opens with none of the configured keys (versions ${versions.join(", ")}): ` +
        `add the key it was sealed with to ${this.names.oldKeys}`,
    );
  }

  /**
   * The current key and version, and `version:key,version:key` of retired keys still needed to open older rows.
   * `names` are the variables these came from, for error messages (the control plane's carry a `CP_` prefix).
   */
  static fromConfig(
    current: string,
    currentVersion: number,
    oldKeys: string,
    names: SecretsKeyNames = TENANT_SECRETS_KEY_NAMES,
  ): Sealer {
    const keys = new Map<number, Buffer>([[currentVersion, parseKey(current, names.key)]]);
    for (const entry of oldKeys
      .split(",")
      .map((part) => part.trim())
      .filter(Boolean)) {
      const separator = entry.indexOf(":");
      const version = entry.slice(0, separator);
      const key = entry.slice(separator + 1);
      if (separator < 0 || !/^[1-9]\d{0,8}$/.test(version) || !key) {
        throw new Error(
          `${names.oldKeys} must be version:key pairs separated by commas (version a positive integer)`,
        );
      }
      if (keys.has(Number(version))) {
        throw new Error(
          Number(version) === currentVersion
            ? `${names.oldKeys} repeats the current key version ${version}: an old key needs its own version`
            : `${names.oldKeys} names key version ${version} twice`,
        );
      }
      keys.set(Number(version), parseKey(key, names.oldKeys));
    }
    return new Sealer(keys, currentVersion, names);
  }
}

/** AES-256-GCM open; null when the value is malformed or does not authenticate with this key and associated data. */
function decrypt(key: Buffer, sealed: string, associatedData: string): string | null {
  const [iv, tag, body, extra] = sealed.split(".").map((part) => Buffer.from(part, "base64url"));
  if (!iv || !tag || !body || extra || iv.length !== 12 || tag.length !== 16) return null;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, iv);
    decipher.setAAD(Buffer.from(associatedData));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString("utf8");
  } catch {
    return null;
  }
}
