//! Secrets at rest (provider API keys): sealed with XChaCha20-Poly1305 under a key the operator
//! provides, bound to the row they belong to so a sealed value cannot be moved to another row.
//!
//! The key comes from `TOOLHOST_SECRET_KEY` (32 bytes, base64 or hex), else from the file named
//! by `TOOLHOST_SECRET_KEY_FILE` or the config's `secret_key_file`, else from `secret.key` in the
//! data directory, which is created on first start so a single machine needs no set-up. Replicas
//! sharing a PostgreSQL database must share the key.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key {0} is not 32 bytes of base64 or hex; generate one with `openssl rand -base64 32`")]
    BadKey(String),
    #[error("cannot read or create the secret key file `{path}`: {error}")]
    KeyFile { path: PathBuf, error: std::io::Error },
    #[error(
        "a stored secret cannot be decrypted with this server's key; every replica needs the same TOOLHOST_SECRET_KEY, or set the secret again"
    )]
    Undecryptable,
}

/// Seals and opens secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// What replicas show each other (see [`SecretBox::relay_token`]).
    relay_token: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

fn decode_key(text: &str, origin: &str) -> Result<[u8; 32], SecretError> {
    let text = text.trim();
    let bytes = STANDARD
        .decode(text)
        .ok()
        .filter(|b| b.len() == 32)
        .or_else(|| hex::decode(text).ok().filter(|b| b.len() == 32));
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| SecretError::BadKey(origin.to_string()))
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        use sha2::Digest;
        // A one-way derivation: a replica's token reveals nothing of the key that seals secrets.
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"toolhost relay token v1\0");
        hasher.update(key);
        let relay_token = hex::encode(hasher.finalize());
        SecretBox { cipher: XChaCha20Poly1305::new(&key.into()), relay_token }
    }

    /// The secret every replica sharing this key shows the others on its relay calls: replicas
    /// of one deployment share the sealing key already (they open the same stored secrets).
    pub fn relay_token(&self) -> &str {
        &self.relay_token
    }

    /// The operator's key: environment, then the key file, then `data_dir/secret.key` (created
    /// if missing, readable only by this user).
    pub fn load(key_file: Option<&Path>, data_dir: &Path) -> Result<SecretBox, SecretError> {
        if let Ok(text) = std::env::var("TOOLHOST_SECRET_KEY") {
            return Ok(SecretBox::from_key(decode_key(&text, "in TOOLHOST_SECRET_KEY")?));
        }
        let env_file = std::env::var_os("TOOLHOST_SECRET_KEY_FILE").map(PathBuf::from);
        if let Some(path) = env_file.as_deref().or(key_file) {
            let text = std::fs::read_to_string(path)
                .map_err(|error| SecretError::KeyFile { path: path.to_path_buf(), error })?;
            return Ok(SecretBox::from_key(decode_key(&text, &format!("in `{}`", path.display()))?));
        }
        let path = data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(SecretBox::from_key(decode_key(&text, &format!("in `{}`", path.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(&path, &STANDARD.encode(key))
                    .map_err(|error| SecretError::KeyFile { path: path.clone(), error })?;
                tracing::info!(path = %path.display(), "created a secret key for API keys at rest; back it up with the database");
                Ok(SecretBox::from_key(key))
            }
            Err(error) => Err(SecretError::KeyFile { path, error }),
        }
    }

    /// `plaintext` sealed for the row `context` names.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{VERSION_PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(VERSION_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(SecretError::Undecryptable)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: context.as_bytes() })
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Undecryptable)
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_token_is_the_same_for_one_key_and_differs_between_keys() {
        let (a, b) = (SecretBox::from_key([7; 32]), SecretBox::from_key([8; 32]));
        assert_eq!(a.relay_token(), SecretBox::from_key([7; 32]).relay_token());
        assert_ne!(a.relay_token(), b.relay_token());
        assert!(!a.relay_token().contains(&hex::encode([7u8; 32])), "the token is not the key");
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_row() {
        let secrets = SecretBox::from_key([7; 32]);
        let sealed = secrets.seal("sk-live-123", "provider:p1");
        assert!(!sealed.contains("sk-live"), "{sealed}");
        assert_ne!(sealed, secrets.seal("sk-live-123", "provider:p1"), "each seal has its own nonce");
        assert_eq!(secrets.open(&sealed, "provider:p1").unwrap(), "sk-live-123");
        assert!(matches!(secrets.open(&sealed, "provider:p2"), Err(SecretError::Undecryptable)));
        assert!(matches!(SecretBox::from_key([8; 32]).open(&sealed, "provider:p1"), Err(SecretError::Undecryptable)));
    }

    #[test]
    fn a_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretBox::load(None, dir.path()).unwrap();
        let sealed = first.seal("k", "c");
        let again = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(again.open(&sealed, "c").unwrap(), "k");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("bad.key"), "short").unwrap();
        assert!(matches!(SecretBox::load(Some(&dir.path().join("bad.key")), dir.path()), Err(SecretError::BadKey(_))));
    }
}
