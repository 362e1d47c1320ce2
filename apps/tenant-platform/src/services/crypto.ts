import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** A new bearer token: 32 random bytes, url-safe, with a prefix saying what it is. */
export function mintToken(prefix: "mbt" | "mwt"): string {
  return `${prefix}_${randomBytes(32).toString("base64url")}`;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Constant-time comparison of two secrets of any length (compares their digests). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest());
}

export function parseKey(text: string, name: string): Buffer {
  const key = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  if (key.length !== 32) throw new Error(`${name} must be 32 bytes, as 64 hex characters or base64`);
  return key;
}

/**
 * AES-256-GCM with a versioned key ring. The associated data binds a sealed value to where it belongs
 * (workspace id and key name), so a value copied to another row does not open.
 */
export class Sealer {
  constructor(
    private readonly keys: ReadonlyMap<number, Buffer>,
    readonly currentVersion: number,
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

  open(sealed: string, keyVersion: number, associatedData: string): string {
    const key = this.keys.get(keyVersion);
    if (!key) throw new Error(`no secrets key for version ${keyVersion}`);
    const [iv, tag, body] = sealed.split(".").map((part) => Buffer.from(part, "base64url"));
    if (!iv || !tag || !body) throw new Error("sealed value is malformed");
    const decipher = createDecipheriv("aes-256-gcm", key, iv);
    decipher.setAAD(Buffer.from(associatedData));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString("utf8");
  }

  /** `version:key,version:key` of retired keys still needed to open older rows. */
  static fromConfig(current: string, currentVersion: number, oldKeys: string): Sealer {
    const keys = new Map<number, Buffer>([[currentVersion, parseKey(current, "SECRETS_ENCRYPTION_KEY")]]);
    for (const entry of oldKeys.split(",").filter(Boolean)) {
      const [version, key] = entry.split(":");
      if (!version || !key) throw new Error("SECRETS_ENCRYPTION_OLD_KEYS must be version:key pairs");
      keys.set(Number(version), parseKey(key, "SECRETS_ENCRYPTION_OLD_KEYS"));
    }
    return new Sealer(keys, currentVersion);
  }
}
