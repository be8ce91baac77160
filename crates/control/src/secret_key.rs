//! The key that seals secret fields at rest, and the sealing itself.
//!
//! A sealed value is the text `enc:v1:` followed by the base64 of nonce ‖ ciphertext ‖ tag:
//! AES-256-GCM (ring) with a random 96-bit nonce per value, so equal secrets never look
//! alike in the store. A value without that prefix was written by a version that did not
//! seal: it reads as it is, and is sealed when its record is next written.
//!
//! The key is 32 random bytes, kept as base64 text: in `secret.key` in the data directory
//! (the owner's only), or given by the environment. Every node of a fleet needs the same.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
const SEALED_PREFIX: &str = "enc:v1:";

/// Why a key could not be had, or a value not sealed or opened. Never quotes a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("cannot read the secret key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the secret key {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret key in {0} is not {KEY_LEN} bytes in base64 (`openssl rand -base64 32` makes one)"
    )]
    Malformed(String),
    #[error("the system's random number generator failed")]
    Random,
    #[error("a secret is too long to seal")]
    TooLong,
    #[error("a sealed secret cannot be opened: it was sealed with another secret key, or damaged")]
    CannotOpen,
}

/// The sealing key. Its bytes are never printed.
pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(AES-256-GCM)")
    }
}

impl SecretKey {
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(SecretKey {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// A key given as base64 text; `origin` names where it came from, for the error.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, SecretKeyError> {
        BASE64
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .and_then(|b| Self::from_bytes(&b))
            .ok_or_else(|| SecretKeyError::Malformed(origin.to_owned()))
    }

    /// A new random key, with its base64 text (to keep it).
    pub fn generate() -> Result<(Self, String), SecretKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretKeyError::Random)?;
        let key = Self::from_bytes(&bytes).ok_or(SecretKeyError::Random)?;
        Ok((key, BASE64.encode(bytes)))
    }

    /// The key kept in `path`, created there (0600, from creation on) when there is none.
    /// A key file others may read is made the owner's only, with a warning.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretKeyError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let read_err = |source| SecretKeyError::Read {
            path: path.to_owned(),
            source,
        };
        let write_err = |source| SecretKeyError::Write {
            path: path.to_owned(),
            source,
        };
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                let (key, text) = Self::generate()?;
                file.write_all(format!("{text}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(write_err)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(write_err)?;
                }
                tracing::info!(path = %path.display(), "generated the secret key that seals secrets at rest; back it up with the data");
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)
                    .map_err(read_err)?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the secret key was readable by others; making it the owner's only");
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(write_err)?;
                }
                let text = std::fs::read_to_string(path).map_err(read_err)?;
                Self::from_base64(&text, &path.display().to_string())
            }
            Err(e) => Err(write_err(e)),
        }
    }

    /// `plaintext` sealed, as text to store.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| SecretKeyError::Random)?;
        let mut body = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .map_err(|_| SecretKeyError::TooLong)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    /// A stored value opened: sealed ones with this key (any failure to authenticate is
    /// an error, never garbage), unsealed ones (written before sealing existed) as they are.
    pub fn open(&self, stored: &str) -> Result<String, SecretKeyError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let mut sealed = BASE64
            .decode(encoded)
            .map_err(|_| SecretKeyError::CannotOpen)?;
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SecretKeyError::CannotOpen);
        }
        let mut body = sealed.split_off(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed).map_err(|_| SecretKeyError::CannotOpen)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| SecretKeyError::CannotOpen)?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| SecretKeyError::CannotOpen)
    }

    /// Whether `stored` is a sealed value (rather than one written before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap().0
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_hides_the_plaintext() {
        let k = key();
        let secret = "s3cret-header-value ünïcode";
        let sealed = k.seal(secret).unwrap();
        assert!(SecretKey::is_sealed(&sealed));
        assert!(!sealed.contains(secret), "{sealed}");
        assert!(!sealed.contains(&BASE64.encode(secret)), "{sealed}");
        assert_eq!(k.open(&sealed).unwrap(), secret);
        // A fresh nonce each time: equal secrets never look alike.
        assert_ne!(k.seal(secret).unwrap(), sealed);
        assert_eq!(k.open(&k.seal("").unwrap()).unwrap(), "");
    }

    #[test]
    fn another_key_cannot_open_it() {
        let sealed = key().seal("secret").unwrap();
        assert!(matches!(
            key().open(&sealed),
            Err(SecretKeyError::CannotOpen)
        ));
    }

    #[test]
    fn a_tampered_value_is_refused_not_garbled() {
        let k = key();
        let sealed = k.seal("secret value").unwrap();
        let mut bytes = BASE64.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            let text = format!("{SEALED_PREFIX}{}", BASE64.encode(&damaged));
            assert!(k.open(&text).is_err(), "byte {i} flipped");
        }
        bytes.truncate(NONCE_LEN + 3);
        let short = format!("{SEALED_PREFIX}{}", BASE64.encode(&bytes));
        assert!(k.open(&short).is_err());
        assert!(k.open("enc:v1:not base64!").is_err());
    }

    #[test]
    fn values_written_before_sealing_read_as_they_are() {
        let k = key();
        assert_eq!(k.open("plain-legacy-token").unwrap(), "plain-legacy-token");
        assert_eq!(k.open("").unwrap(), "");
    }

    #[test]
    fn keys_from_text_must_be_32_bytes_of_base64() {
        let (k, text) = SecretKey::generate().unwrap();
        let sealed = k.seal("x").unwrap();
        let again = SecretKey::from_base64(&format!("{text}\n"), "env").unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "x");
        assert!(SecretKey::from_base64("c2hvcnQ=", "env").is_err());
        assert!(SecretKey::from_base64("not base64", "env").is_err());
        let message = SecretKey::from_base64("c2hvcnQ=", "FULCRUM_SECRET_KEY")
            .unwrap_err()
            .to_string();
        assert!(message.contains("FULCRUM_SECRET_KEY"), "{message}");
    }

    #[test]
    fn the_key_file_is_created_private_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("kept").unwrap();
        let second = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(second.open(&sealed).unwrap(), "kept");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tightened");

        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            SecretKey::load_or_create(&path),
            Err(SecretKeyError::Malformed(_))
        ));
    }
}
