//! Integration tests for refresh-token encryption (public API only).

use calendar_sync::crypto::{DecryptError, EnvelopePart, KeyError, KeySource, TokenCipher};
use secrecy::{ExposeSecret, SecretString};

/// Test vector, cross-checked with Python `cryptography` (AESGCM).
const VECTOR_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0x00..=0x1f
const VECTOR_NONCE_HEX: &str = "000102030405060708090a0b";
const VECTOR_WORKSPACE: &str = "9f1c2a3e-0000-4000-8000-000000000001";
const VECTOR_PLAINTEXT: &str = "1//0gFakeRefreshToken-For-Tests";
const VECTOR_KID: &str = "630dcd29";
const VECTOR_ENVELOPE: &str =
    "v1:630dcd29:AAECAwQFBgcICQoLdi35K6Kjo3DoE_Ltw4wLBde57FGeVhkTSkqx4G4dc217vmRWDWKMEDmwUIdGGBw";

const WS: &str = "9f1c2a3e-0000-4000-8000-000000000001";
const OTHER_WS: &str = "9f1c2a3e-0000-4000-8000-000000000002";
const TOKEN: &str = "1//0gSecretRefreshToken-xyz";
const KEY_A_B64: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="; // 32 x 'A'
const KEY_B_B64: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="; // 32 x 'B'

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

fn cipher(current: u8, old: &[u8]) -> TokenCipher {
    TokenCipher::from_keys([current; 32], old.iter().map(|b| [*b; 32]).collect())
}

fn nonce_from_hex(hex: &str) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Replaces the payload character at `idx` with a different base64url character.
fn flip_payload_char(envelope: &str, idx: usize) -> String {
    let (head, payload) = envelope.rsplit_once(':').unwrap();
    let mut chars: Vec<char> = payload.chars().collect();
    chars[idx] = if chars[idx] == 'A' { 'B' } else { 'A' };
    format!("{head}:{}", chars.into_iter().collect::<String>())
}

#[test]
fn test_vector() {
    let c = TokenCipher::new(VECTOR_KEY_B64, "").unwrap();
    assert_eq!(c.current_key_id(), VECTOR_KID);
    let env = c.encrypt_with_nonce(
        VECTOR_WORKSPACE,
        &secret(VECTOR_PLAINTEXT),
        nonce_from_hex(VECTOR_NONCE_HEX),
    );
    assert_eq!(env, VECTOR_ENVELOPE);
    let pt = c.decrypt(VECTOR_WORKSPACE, VECTOR_ENVELOPE).unwrap();
    assert_eq!(pt.expose_secret(), VECTOR_PLAINTEXT);
    let raw: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
    assert_eq!(
        TokenCipher::from_keys(raw, vec![]).current_key_id(),
        VECTOR_KID
    );
}

#[test]
fn round_trip() {
    let c = TokenCipher::new(KEY_A_B64, "").unwrap();
    for token in [TOKEN, "", "ünïcødé ✓"] {
        let env = c.encrypt(WS, &secret(token));
        assert!(env.starts_with(&format!("v1:{}:", c.current_key_id())));
        assert!(!env.contains(token) || token.is_empty());
        assert_eq!(c.decrypt(WS, &env).unwrap().expose_secret(), token);
        assert!(!c.needs_reencryption(&env));
    }
}

#[test]
fn nonces_differ() {
    let c = cipher(1, &[]);
    let a = c.encrypt(WS, &secret(TOKEN));
    let b = c.encrypt(WS, &secret(TOKEN));
    assert_ne!(a, b);
    let payload = |e: &str| e.rsplit_once(':').unwrap().1[..16].to_owned(); // 12 nonce bytes
    assert_ne!(payload(&a), payload(&b));
}

#[test]
fn wrong_key_is_unknown_key_id() {
    let env = cipher(1, &[]).encrypt(WS, &secret(TOKEN));
    let other = cipher(2, &[]);
    let kid = cipher(1, &[]).current_key_id().to_owned();
    let err = other.decrypt(WS, &env).unwrap_err();
    assert_eq!(err, DecryptError::UnknownKeyId { kid: kid.clone() });
    assert!(err.to_string().contains(&kid));
}

#[test]
fn tampered_ciphertext_fails_authentication() {
    let c = cipher(1, &[]);
    let env = c.encrypt(WS, &secret(TOKEN));
    // Positions 0 (nonce), 20 (ciphertext) and last (tag) of the payload.
    let len = env.rsplit_once(':').unwrap().1.len();
    for idx in [0, 20, len - 2] {
        let bad = flip_payload_char(&env, idx);
        assert_eq!(
            c.decrypt(WS, &bad).unwrap_err(),
            DecryptError::AuthenticationFailed
        );
    }
}

#[test]
fn tampered_envelope_header_and_encoding() {
    let c = cipher(1, &[]);
    let env = c.encrypt(WS, &secret(TOKEN));
    let (_, rest) = env.split_once(':').unwrap();
    let (kid, payload) = rest.split_once(':').unwrap();
    let malformed = |part| Err(DecryptError::Malformed { part });
    let check = |e: &str| c.decrypt(WS, e).map(|s| s.expose_secret().to_owned());

    // Version.
    let err = c.decrypt(WS, &format!("v2:{rest}")).unwrap_err();
    assert_eq!(
        err,
        DecryptError::UnsupportedVersion {
            version: "v2".into()
        }
    );
    assert!(err.to_string().contains("v2"));
    assert_eq!(
        check(&format!("V1:{rest}")),
        malformed(EnvelopePart::Version)
    );
    // Key id: valid form but different value, and invalid form.
    let other_kid = if kid == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    assert_eq!(
        check(&format!("v1:{other_kid}:{payload}")),
        Err(DecryptError::UnknownKeyId {
            kid: other_kid.into()
        })
    );
    assert_eq!(
        check(&format!("v1:{kid}x:{payload}")),
        malformed(EnvelopePart::KeyId)
    );
    // Payload encoding and length.
    assert_eq!(
        check(&format!("v1:{kid}:{payload}=")),
        malformed(EnvelopePart::PayloadEncoding)
    );
    assert_eq!(
        check(&format!("v1:{kid}:{payload}*")),
        malformed(EnvelopePart::PayloadEncoding)
    );
    let std_b64 = payload.replace('-', "+").replace('_', "/");
    if std_b64 != payload {
        assert_eq!(
            check(&format!("v1:{kid}:{std_b64}")),
            malformed(EnvelopePart::PayloadEncoding)
        );
    }
    assert_eq!(
        check(&format!("v1:{kid}:{}", &payload[..36])),
        malformed(EnvelopePart::PayloadLength)
    );
    // Layout.
    assert_eq!(check(TOKEN), malformed(EnvelopePart::Layout));
    assert_eq!(check(""), malformed(EnvelopePart::Layout));
    assert_eq!(check(&format!("v1:{kid}")), malformed(EnvelopePart::Layout));
    assert!(!c.needs_reencryption(TOKEN));
}

#[test]
fn ciphertext_moved_to_another_workspace_fails() {
    let c = cipher(1, &[]);
    let env = c.encrypt(WS, &secret(TOKEN));
    assert_eq!(
        c.decrypt(OTHER_WS, &env).unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    assert_eq!(
        c.decrypt("", &env).unwrap_err(),
        DecryptError::AuthenticationFailed
    );
}

#[test]
fn key_rotation() {
    let a = TokenCipher::new(KEY_A_B64, "").unwrap();
    let env_a = a.encrypt(WS, &secret(TOKEN));

    let b = TokenCipher::new(KEY_B_B64, &format!(" {KEY_A_B64} ,")).unwrap();
    assert_ne!(b.current_key_id(), a.current_key_id());
    assert!(b.needs_reencryption(&env_a));
    let pt = b.decrypt(WS, &env_a).unwrap();
    assert_eq!(pt.expose_secret(), TOKEN);

    let env_b = b.encrypt(WS, &pt);
    assert!(env_b.starts_with(&format!("v1:{}:", b.current_key_id())));
    assert!(!b.needs_reencryption(&env_b));
    assert_eq!(b.decrypt(WS, &env_b).unwrap().expose_secret(), TOKEN);
    // Unknown key ids are not "old": they cannot be re-encrypted.
    assert!(!a.needs_reencryption(&env_b));
    assert!(!cipher(9, &[]).needs_reencryption(&env_a));
    // The old key alone cannot read the new ciphertext.
    assert!(matches!(
        a.decrypt(WS, &env_b),
        Err(DecryptError::UnknownKeyId { .. })
    ));
    // Rotation keeps workspace binding.
    assert_eq!(
        b.decrypt(OTHER_WS, &env_a).unwrap_err(),
        DecryptError::AuthenticationFailed
    );
}

#[test]
fn key_errors() {
    let key16 = "AAECAwQFBgcICQoLDA0ODw=="; // 16 bytes
    let old_with_bad_second = format!("{KEY_B_B64}, {key16}");
    let cases: Vec<(&str, &str, KeyError)> = vec![
        ("", "", KeyError::Missing),
        ("  \n", "", KeyError::Missing),
        (
            "not base64!",
            "",
            KeyError::NotBase64 {
                which: KeySource::Current,
            },
        ),
        (
            key16,
            "",
            KeyError::WrongLength {
                which: KeySource::Current,
                len: 16,
            },
        ),
        (
            KEY_A_B64,
            "%%%%",
            KeyError::NotBase64 {
                which: KeySource::Old { entry: 1 },
            },
        ),
        (
            KEY_A_B64,
            &old_with_bad_second,
            KeyError::WrongLength {
                which: KeySource::Old { entry: 2 },
                len: 16,
            },
        ),
    ];
    for (current, old, expected) in cases {
        let err = TokenCipher::new(current, old).unwrap_err();
        assert_eq!(err, expected);
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        for value in [current.trim(), key16, KEY_B_B64, "%%%%", "not base64!"] {
            if !value.is_empty() {
                assert!(!msg.contains(value), "{msg} leaks {value}");
            }
        }
        assert!(!format!("{err:?}").contains(key16));
    }
    assert_eq!(
        TokenCipher::new(key16, "").unwrap_err().to_string(),
        "TOKEN_ENCRYPTION_KEY must be base64 of 32 bytes (got 16 bytes)"
    );
    assert_eq!(
        TokenCipher::new(KEY_A_B64, &format!("{KEY_B_B64},{key16}"))
            .unwrap_err()
            .to_string(),
        "TOKEN_ENCRYPTION_OLD_KEYS entry 2 must be base64 of 32 bytes (got 16 bytes)"
    );
}

#[test]
fn key_parsing_is_tolerant_where_documented() {
    // Surrounding whitespace, missing padding, duplicate of current, empty entries.
    let unpadded = KEY_A_B64.trim_end_matches('=');
    let c = TokenCipher::new(&format!(" {unpadded}\n"), &format!(",{KEY_A_B64}, ,")).unwrap();
    assert_eq!(
        c.current_key_id(),
        TokenCipher::new(KEY_A_B64, "").unwrap().current_key_id()
    );
    assert!(format!("{c:?}").contains("old_key_ids: []"), "{c:?}");
}

#[test]
fn debug_output_reveals_no_secrets() {
    let b = TokenCipher::new(KEY_B_B64, KEY_A_B64).unwrap();
    let a_kid = TokenCipher::new(KEY_A_B64, "")
        .unwrap()
        .current_key_id()
        .to_owned();
    let dbg = format!("{b:?} {:?}", b.clone());
    assert!(
        dbg.contains(b.current_key_id()) && dbg.contains(&a_kid),
        "{dbg}"
    );
    for leak in [KEY_A_B64, KEY_B_B64, "66, 66", "0x42", "BBBB"] {
        assert!(!dbg.contains(leak), "{dbg}");
    }

    let env = b.encrypt(WS, &secret(TOKEN));
    let pt = b.decrypt(WS, &env).unwrap();
    assert!(!format!("{pt:?}").contains(TOKEN));
    for err in [
        b.decrypt(OTHER_WS, &env).unwrap_err(),
        cipher(9, &[]).decrypt(WS, &env).unwrap_err(),
    ] {
        assert!(!err.to_string().contains(TOKEN) && !format!("{err:?}").contains(TOKEN));
    }
}
