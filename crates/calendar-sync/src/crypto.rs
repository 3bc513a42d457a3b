//! Encryption of OAuth refresh tokens at rest.
//!
//! Refresh tokens are stored in `google_connections.refresh_token_encrypted`
//! (a `text` column) as a versioned envelope:
//!
//! ```text
//! v1:<kid>:<base64url-no-pad(nonce[12] || ciphertext || tag[16])>
//! ```
//!
//! * Cipher: AES-256-GCM, 96-bit random nonce per encryption (OS RNG), 128-bit tag.
//! * `kid`: the first 8 lowercase hex characters of `SHA-256(key bytes)`
//!   (the first 4 bytes of the digest). Keys need no configured ids, and a
//!   ciphertext sealed under a key that is not configured is reported as an
//!   unknown key id rather than a bare authentication failure.
//! * AAD: the UTF-8 bytes of `calendar-sync:v1:<kid>:<workspace_id>`, so a
//!   ciphertext copied into another workspace's row fails authentication.
//!   The workspace id must be the same string on both sides (for a Postgres
//!   `uuid`, its canonical lowercase hyphenated text form).
//! * Payload: URL-safe base64 alphabet (`-`, `_`) without `=` padding.
//!
//! Keys come from `TOKEN_ENCRYPTION_KEY` (standard base64 of exactly 32
//! bytes) and `TOKEN_ENCRYPTION_OLD_KEYS` (comma-separated keys in the same
//! form, whitespace around entries ignored, empty entries ignored). Encryption
//! always uses the current key; any configured key decrypts.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use secrecy::zeroize::{Zeroize, Zeroizing};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

/// Length in bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Length in bytes of the AES-GCM nonce at the start of the payload.
pub(crate) const NONCE_LEN: usize = 12;
/// Length in bytes of the AES-GCM tag at the end of the payload.
pub(crate) const TAG_LEN: usize = 16;
/// Version prefix written by this module.
pub(crate) const ENVELOPE_VERSION: &str = "v1";
/// Prefix of the associated data; the full AAD is `calendar-sync:v1:<kid>:<workspace_id>`.
pub(crate) const AAD_PREFIX: &str = "calendar-sync:v1:";

/// Name of the environment variable holding the current key.
const CURRENT_VAR: &str = "TOKEN_ENCRYPTION_KEY";
/// Name of the environment variable holding the retired keys.
const OLD_VAR: &str = "TOKEN_ENCRYPTION_OLD_KEYS";
/// Length of a key id in hex characters.
const KID_LEN: usize = 8;

/// Standard alphabet; trailing `=` padding optional when decoding keys.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Identifies which configured key a [`KeyError`] is about.
///
/// ```
/// use calendar_sync::TokenCipher;
/// use calendar_sync::crypto::{KeyError, KeySource};
///
/// let current = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
/// // Empty entries count: the bad key is the second entry.
/// let error = TokenCipher::new(current, " , not-base64!").unwrap_err();
/// assert_eq!(error, KeyError::NotBase64 { which: KeySource::Old { entry: 2 } });
/// assert_eq!(KeySource::Old { entry: 2 }.to_string(), "TOKEN_ENCRYPTION_OLD_KEYS entry 2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// `TOKEN_ENCRYPTION_KEY`.
    Current,
    /// Entry `entry` (1-based position in the comma-separated list) of
    /// `TOKEN_ENCRYPTION_OLD_KEYS`.
    Old {
        /// 1-based position of the entry, counting empty entries.
        entry: usize,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Current => f.write_str(CURRENT_VAR),
            KeySource::Old { entry } => write!(f, "{OLD_VAR} entry {entry}"),
        }
    }
}

/// Invalid key configuration. Messages are single lines and never contain
/// key material or the raw configured value.
///
/// ```
/// use calendar_sync::TokenCipher;
/// use calendar_sync::crypto::{KeyError, KeySource};
///
/// // Base64 of 16 bytes, not 32:
/// let error = TokenCipher::new("MDEyMzQ1Njc4OWFiY2RlZg==", "").unwrap_err();
/// assert_eq!(error, KeyError::WrongLength { which: KeySource::Current, len: 16 });
/// assert_eq!(
///     error.to_string(),
///     "TOKEN_ENCRYPTION_KEY must be base64 of 32 bytes (got 16 bytes)"
/// );
/// assert_eq!(TokenCipher::new("  ", "").unwrap_err(), KeyError::Missing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `TOKEN_ENCRYPTION_KEY` is empty or only whitespace.
    #[error("TOKEN_ENCRYPTION_KEY is missing or empty (expected base64 of 32 bytes)")]
    Missing,
    /// The value is not standard base64.
    #[error("{which} is not valid standard base64 (expected base64 of 32 bytes)")]
    NotBase64 {
        /// Which key was malformed.
        which: KeySource,
    },
    /// The value decodes to something other than 32 bytes.
    #[error("{which} must be base64 of 32 bytes (got {len} bytes)")]
    WrongLength {
        /// Which key was malformed.
        which: KeySource,
        /// Decoded length in bytes.
        len: usize,
    },
}

/// Which part of an envelope is malformed (see [`DecryptError::Malformed`]).
///
/// ```
/// use calendar_sync::TokenCipher;
/// use calendar_sync::crypto::{DecryptError, EnvelopePart};
///
/// let cipher = TokenCipher::from_keys([7; 32], Vec::new());
/// // A token stored in the clear, not sealed:
/// let error = cipher.decrypt("acme", "1//0g-refresh-token").unwrap_err();
/// assert_eq!(error, DecryptError::Malformed { part: EnvelopePart::Layout });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopePart {
    /// Not of the form `<version>:<kid>:<payload>`.
    Layout,
    /// The version prefix is not `v<number>`.
    Version,
    /// The key id is not 8 lowercase hex characters.
    KeyId,
    /// The payload is not unpadded URL-safe base64.
    PayloadEncoding,
    /// The payload is shorter than nonce + tag (28 bytes).
    PayloadLength,
}

impl fmt::Display for EnvelopePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvelopePart::Layout => "expected `v1:<key id>:<payload>`",
            EnvelopePart::Version => "version prefix is not of the form `v<number>`",
            EnvelopePart::KeyId => "key id is not 8 lowercase hex characters",
            EnvelopePart::PayloadEncoding => "payload is not unpadded base64url",
            EnvelopePart::PayloadLength => "payload is shorter than nonce + tag (28 bytes)",
        })
    }
}

/// Failure to decrypt an envelope. Messages never contain token or key material.
///
/// ```
/// use calendar_sync::TokenCipher;
/// use calendar_sync::crypto::DecryptError;
/// use secrecy::SecretString;
///
/// let old = TokenCipher::from_keys([7; 32], Vec::new());
/// let sealed = old.encrypt("acme", &SecretString::from("1//0g-refresh-token"));
/// // A new key without the old one in TOKEN_ENCRYPTION_OLD_KEYS:
/// let new = TokenCipher::from_keys([8; 32], Vec::new());
/// let error = new.decrypt("acme", &sealed).unwrap_err();
/// let kid = old.current_key_id().to_owned();
/// assert_eq!(error, DecryptError::UnknownKeyId { kid });
/// // With it, the token opens, and should be sealed again under the new key:
/// let rotated = TokenCipher::from_keys([8; 32], vec![[7; 32]]);
/// assert!(rotated.decrypt("acme", &sealed).is_ok());
/// assert!(rotated.needs_reencryption(&sealed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The envelope could not be parsed.
    #[error("malformed token envelope: {part}")]
    Malformed {
        /// The offending part.
        part: EnvelopePart,
    },
    /// The envelope has a well-formed version prefix other than `v1`.
    #[error("unsupported token envelope version {version} (this build reads v1)")]
    UnsupportedVersion {
        /// The version prefix found, e.g. `v2`.
        version: String,
    },
    /// No configured key has this id.
    #[error(
        "token was sealed with unknown key id {kid} (add that key to TOKEN_ENCRYPTION_OLD_KEYS)"
    )]
    UnknownKeyId {
        /// The key id found in the envelope (not secret).
        kid: String,
    },
    /// The tag did not verify: wrong workspace, tampered data, or a different
    /// key whose id collides with a configured one.
    #[error("token failed authentication (wrong workspace, tampered data, or wrong key)")]
    AuthenticationFailed,
    /// The decrypted bytes are not UTF-8.
    #[error("decrypted token is not valid UTF-8")]
    NotUtf8,
}

/// One configured key and its id.
struct KeySlot {
    id: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl KeySlot {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        KeySlot {
            id: key_id(bytes),
            key: SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| k.copy_from_slice(bytes)),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.expose_secret().into())
    }
}

impl Clone for KeySlot {
    fn clone(&self) -> Self {
        KeySlot::new(self.key.expose_secret())
    }
}

/// Encrypts and decrypts refresh tokens. `Debug` shows key ids only.
///
/// ```
/// use calendar_sync::TokenCipher;
/// use secrecy::{ExposeSecret, SecretString};
///
/// // In production the key comes from TOKEN_ENCRYPTION_KEY (`openssl rand -base64 32`).
/// let cipher = TokenCipher::new("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "")?;
/// let sealed = cipher.encrypt("acme", &SecretString::from("1//0g-refresh-token"));
/// assert!(sealed.starts_with(&format!("v1:{}:", cipher.current_key_id())));
/// let opened = cipher.decrypt("acme", &sealed)?;
/// assert_eq!(opened.expose_secret(), "1//0g-refresh-token");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TokenCipher {
    current: KeySlot,
    old: Vec<KeySlot>,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old: Vec<&str> = self.old.iter().map(|s| s.id.as_str()).collect();
        f.debug_struct("TokenCipher")
            .field("current_key_id", &self.current.id)
            .field("old_key_ids", &old)
            .finish()
    }
}

impl TokenCipher {
    /// Builds a cipher from the values of `TOKEN_ENCRYPTION_KEY` and
    /// `TOKEN_ENCRYPTION_OLD_KEYS` (pass `""` for no old keys).
    ///
    /// Values are standard base64 (padding optional) of exactly 32 bytes;
    /// surrounding whitespace is ignored, as are empty old-key entries. Old
    /// keys equal to the current key or to each other are dropped.
    ///
    /// ```no_run
    /// use calendar_sync::TokenCipher;
    ///
    /// let cipher = TokenCipher::new(
    ///     &std::env::var("TOKEN_ENCRYPTION_KEY")?,
    ///     &std::env::var("TOKEN_ENCRYPTION_OLD_KEYS").unwrap_or_default(),
    /// )?;
    /// println!("sealing with key id {}", cipher.current_key_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(current_key_b64: &str, old_keys_b64: &str) -> Result<Self, KeyError> {
        let current = current_key_b64.trim();
        if current.is_empty() {
            return Err(KeyError::Missing);
        }
        let current = decode_key(current, KeySource::Current)?;
        let mut old = Vec::new();
        for (i, entry) in old_keys_b64.split(',').enumerate() {
            let entry = entry.trim();
            if !entry.is_empty() {
                old.push(decode_key(entry, KeySource::Old { entry: i + 1 })?);
            }
        }
        Ok(Self::assemble(current, old))
    }

    /// Builds a cipher from raw keys. Old keys equal to the current key or
    /// to each other are dropped.
    pub fn from_keys(mut current: [u8; KEY_LEN], mut old: Vec<[u8; KEY_LEN]>) -> Self {
        let cipher = Self::assemble(
            KeySlot::new(&current),
            old.iter().map(KeySlot::new).collect(),
        );
        current.zeroize();
        old.zeroize();
        cipher
    }

    fn assemble(current: KeySlot, old: Vec<KeySlot>) -> Self {
        let mut kept: Vec<KeySlot> = Vec::with_capacity(old.len());
        for slot in old {
            let bytes = slot.key.expose_secret();
            let duplicate = current.key.expose_secret() == bytes
                || kept.iter().any(|k| k.key.expose_secret() == bytes);
            if !duplicate {
                kept.push(slot);
            }
        }
        TokenCipher { current, old: kept }
    }

    /// Key id (8 lowercase hex characters) of the current key.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` for `workspace_id` with the current key and a
    /// fresh random nonce, returning a `v1:` envelope.
    ///
    /// ```
    /// use calendar_sync::TokenCipher;
    /// use calendar_sync::crypto::DecryptError;
    /// use secrecy::SecretString;
    ///
    /// let cipher = TokenCipher::from_keys([7; 32], Vec::new());
    /// let sealed = cipher.encrypt("acme", &SecretString::from("1//0g-refresh-token"));
    /// // Sealed for one workspace: copied into another's row, it does not open.
    /// let error = cipher.decrypt("globex", &sealed).unwrap_err();
    /// assert_eq!(error, DecryptError::AuthenticationFailed);
    /// ```
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn encrypt(&self, workspace_id: &str, plaintext: &SecretString) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .expect("operating system random number generator failed");
        self.encrypt_with_nonce(workspace_id, plaintext, nonce)
    }

    /// Like [`TokenCipher::encrypt`] with a caller-chosen nonce. For test
    /// vectors only: reusing a nonce under one key breaks AES-GCM.
    #[doc(hidden)]
    pub fn encrypt_with_nonce(
        &self,
        workspace_id: &str,
        plaintext: &SecretString,
        nonce: [u8; NONCE_LEN],
    ) -> String {
        let pt = plaintext.expose_secret().as_bytes();
        // Sized up front so the buffer holding the plaintext never reallocates.
        let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + pt.len() + TAG_LEN));
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(pt);
        let aad = aad(&self.current.id, workspace_id);
        let tag = self
            .current
            .cipher()
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                aad.as_bytes(),
                &mut buf[NONCE_LEN..],
            )
            .expect("token too long for AES-GCM");
        buf.extend_from_slice(&tag);
        format!(
            "{ENVELOPE_VERSION}:{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(&buf[..])
        )
    }

    /// Decrypts an envelope written for `workspace_id` with any configured key.
    pub fn decrypt(
        &self,
        workspace_id: &str,
        envelope: &str,
    ) -> Result<SecretString, DecryptError> {
        let parsed = parse(envelope)?;
        let (nonce, rest) = parsed.payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let aad = aad(parsed.kid, workspace_id);
        let mut known = false;
        // Normally one candidate; several only if distinct keys share an id.
        for slot in self.slots().filter(|s| s.id == parsed.kid) {
            known = true;
            let mut buf = Zeroizing::new(ciphertext.to_vec());
            let verified = slot.cipher().decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad.as_bytes(),
                &mut buf[..],
                Tag::from_slice(tag),
            );
            if verified.is_ok() {
                return match std::str::from_utf8(&buf[..]) {
                    Ok(s) => Ok(SecretString::from(s)),
                    Err(_) => Err(DecryptError::NotUtf8),
                };
            }
        }
        if known {
            Err(DecryptError::AuthenticationFailed)
        } else {
            Err(DecryptError::UnknownKeyId {
                kid: parsed.kid.to_owned(),
            })
        }
    }

    /// True when `envelope` is a well-formed `v1` envelope sealed with one of
    /// the old keys (its key id is an old key's and not the current key's), so
    /// it should be decrypted and encrypted again. Only the envelope's header
    /// and length are checked, not its tag; malformed envelopes and unknown
    /// key ids give `false` (their [`TokenCipher::decrypt`] error says why).
    pub fn needs_reencryption(&self, envelope: &str) -> bool {
        parse(envelope)
            .is_ok_and(|p| p.kid != self.current.id && self.old.iter().any(|s| s.id == p.kid))
    }

    /// Whether a configured key (current or old) has this id.
    pub fn knows_key_id(&self, kid: &str) -> bool {
        self.slots().any(|s| s.id == kid)
    }

    fn slots(&self) -> impl Iterator<Item = &KeySlot> {
        std::iter::once(&self.current).chain(self.old.iter())
    }
}

/// First 8 lowercase hex characters of SHA-256 of the key bytes.
fn key_id(key: &[u8; KEY_LEN]) -> String {
    Sha256::digest(key)[..KID_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn aad(kid: &str, workspace_id: &str) -> String {
    format!("{AAD_PREFIX}{kid}:{workspace_id}")
}

fn decode_key(value: &str, which: KeySource) -> Result<KeySlot, KeyError> {
    // The base64 error is dropped on purpose: it can quote input characters.
    let bytes = Zeroizing::new(
        KEY_B64
            .decode(value)
            .map_err(|_| KeyError::NotBase64 { which })?,
    );
    let key: &[u8; KEY_LEN] = bytes[..].try_into().map_err(|_| KeyError::WrongLength {
        which,
        len: bytes.len(),
    })?;
    Ok(KeySlot::new(key))
}

struct Parsed<'a> {
    kid: &'a str,
    /// `nonce || ciphertext || tag`, at least `NONCE_LEN + TAG_LEN` bytes.
    payload: Vec<u8>,
}

fn parse(envelope: &str) -> Result<Parsed<'_>, DecryptError> {
    let malformed = |part| DecryptError::Malformed { part };
    let (version, rest) = envelope
        .split_once(':')
        .ok_or(malformed(EnvelopePart::Layout))?;
    if version != ENVELOPE_VERSION {
        let digits = version.strip_prefix('v').unwrap_or("");
        return Err(
            if (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
                DecryptError::UnsupportedVersion {
                    version: version.to_owned(),
                }
            } else {
                malformed(EnvelopePart::Version)
            },
        );
    }
    let (kid, payload) = rest
        .split_once(':')
        .filter(|(_, p)| !p.contains(':'))
        .ok_or(malformed(EnvelopePart::Layout))?;
    if kid.len() != KID_LEN || !kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed(EnvelopePart::KeyId));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed(EnvelopePart::PayloadEncoding))?;
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err(malformed(EnvelopePart::PayloadLength));
    }
    Ok(Parsed { kid, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(envelope: &str) -> Option<EnvelopePart> {
        match parse(envelope) {
            Err(DecryptError::Malformed { part }) => Some(part),
            _ => None,
        }
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        // SHA-256 of 32 zero bytes is 66687aadf862bd77...
        assert_eq!(key_id(&[0u8; 32]), "66687aad");
    }

    #[test]
    fn parse_reports_each_part() {
        let p = "A".repeat(38); // 28 bytes
        assert_eq!(part("garbage"), Some(EnvelopePart::Layout));
        assert_eq!(
            part(&format!("v1:abcd1234:{p}:x")),
            Some(EnvelopePart::Layout)
        );
        assert_eq!(
            part(&format!("x1:abcd1234:{p}")),
            Some(EnvelopePart::Version)
        );
        assert_eq!(part(&format!("v1:ABCD1234:{p}")), Some(EnvelopePart::KeyId));
        assert_eq!(part(&format!("v1:abcd123:{p}")), Some(EnvelopePart::KeyId));
        assert_eq!(
            part(&format!("v1:abcd1234:{p}=")),
            Some(EnvelopePart::PayloadEncoding)
        );
        assert_eq!(part("v1:abcd1234:AAAA"), Some(EnvelopePart::PayloadLength));
        assert!(matches!(
            parse(&format!("v2:abcd1234:{p}")),
            Err(DecryptError::UnsupportedVersion { version }) if version == "v2"
        ));
        assert!(parse(&format!("v1:abcd1234:{p}")).is_ok());
    }

    #[test]
    fn non_utf8_plaintext_is_reported() {
        let c = TokenCipher::from_keys([3; 32], vec![]);
        let nonce = [0u8; NONCE_LEN];
        let mut buf = vec![0xff, 0xfe];
        let aad = aad(c.current_key_id(), "ws");
        let tag = c.current.cipher().encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            aad.as_bytes(),
            &mut buf,
        );
        let payload = [&nonce[..], &buf, &tag.unwrap()].concat();
        let env = format!(
            "v1:{}:{}",
            c.current_key_id(),
            URL_SAFE_NO_PAD.encode(payload)
        );
        assert_eq!(c.decrypt("ws", &env).unwrap_err(), DecryptError::NotUtf8);
    }

    #[test]
    fn duplicate_old_keys_are_dropped() {
        let c = TokenCipher::from_keys([1; 32], vec![[1; 32], [2; 32], [2; 32]]);
        assert_eq!(c.old.len(), 1);
        assert_eq!(c.clone().old[0].id, key_id(&[2; 32]));
    }

    #[test]
    fn old_key_entries_are_numbered_by_position() {
        let good = KEY_B64.encode([7u8; 32]);
        let err = TokenCipher::new(&good, &format!(" {good} ,, AAAA")).unwrap_err();
        assert_eq!(
            err,
            KeyError::WrongLength {
                which: KeySource::Old { entry: 3 },
                len: 3
            }
        );
    }
}
