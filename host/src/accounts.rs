//! Signing in: passwords (Argon2id, in PHC form), browser sessions, and limits on sign-in
//! attempts, by name and by address, so that guessing a password takes years rather than hours.
//!
//! A wrong name and a wrong password are told apart neither by the answer nor by its time: a
//! name without a password is checked against a hash of nothing, at the same cost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;

use crate::store::{Session, Store, StoreError, User, now_ms};

/// Shortest and longest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Sign-in attempts allowed per minute for one name, and from one address (a reverse proxy
/// makes every person one address: that limit is the looser).
const ATTEMPTS_PER_NAME: u32 = 10;
const ATTEMPTS_PER_ADDRESS: u32 = 60;
/// Keys a limiter keeps before it forgets those that are back to a full allowance.
const REMEMBERED_KEYS: usize = 10_000;
/// How long a token, once found in the database, is taken as valid without asking again.
/// Revoking a token or changing a user on this server takes effect at once; on another replica
/// within this long.
const TOKEN_TRUST: Duration = Duration::from_secs(1);
/// Tokens remembered at most (all are forgotten when there would be more).
const REMEMBERED_TOKENS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the name or the password is wrong")]
    Refused,
    #[error("too many sign-in attempts; try again in {retry_after_secs} s")]
    TooMany { retry_after_secs: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hashes a password with Argon2id (OWASP's parameters: 19 MiB, 2 passes), with a fresh salt.
/// Takes tens of milliseconds: call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, String> {
    check_password(password)?;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|hash| hash.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` is one the server takes, and if not, why.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("a password has at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// Whether `password` matches the stored `hash` (`None`: checked against a hash no password
/// matches, so that the answer takes as long).
fn verify_password(password: &str, hash: Option<&str>) -> bool {
    static NOTHING: OnceLock<String> = OnceLock::new();
    let nothing = NOTHING.get_or_init(|| hash_password("no password matches this").unwrap_or_default());
    let matches = |hash: &str| {
        PasswordHash::new(hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    };
    match hash {
        Some(hash) => matches(hash),
        None => {
            let _same_cost = matches(nothing);
            false
        }
    }
}

pub struct Accounts {
    store: Store,
    by_name: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    session_length: Duration,
    /// API tokens recently found valid (by hash), with their user: a client's run of requests
    /// (an MCP client's tool calls) does not read the database for each.
    tokens: Mutex<HashMap<String, (User, Instant)>>,
}

impl Accounts {
    pub fn new(store: Store, session_length: Duration) -> Arc<Accounts> {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Arc::new(Accounts {
            store,
            by_name: RateLimiter::keyed(per_minute(ATTEMPTS_PER_NAME)),
            by_address: RateLimiter::keyed(per_minute(ATTEMPTS_PER_ADDRESS)),
            session_length,
            tokens: Mutex::default(),
        })
    }

    /// The user an API token belongs to; `None` for an unknown or revoked token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, StoreError> {
        let hash = crate::store::hash_token(token);
        if let Some((user, at)) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&hash)
            && at.elapsed() < TOKEN_TRUST
        {
            return Ok(Some(user.clone()));
        }
        let user = self.store.authenticate(token).await?;
        if let Some(user) = &user {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if tokens.len() >= REMEMBERED_TOKENS {
                tokens.clear();
            }
            tokens.insert(hash, (user.clone(), Instant::now()));
        }
        Ok(user)
    }

    /// Forgets the tokens found valid: one was revoked, or a user's role changed.
    pub fn forget_tokens(&self) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn session_length(&self) -> Duration {
        self.session_length
    }

    /// Signs `name` in with `password`, from `address`: the session cookie's value and the
    /// session.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<(String, Session), SignInError> {
        self.allow_attempt(name, address)?;
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(SignInError::Refused);
        }
        let found = self.store.user_with_password(name).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let password = password.to_string();
        let matched =
            tokio::task::spawn_blocking(move || verify_password(&password, hash.as_deref())).await.unwrap_or(false);
        let Some(user) = user.filter(|_| matched) else {
            tracing::info!(name, ?address, "a sign-in was refused");
            return Err(SignInError::Refused);
        };
        let expires_at = now_ms() + self.session_length.as_millis() as i64;
        let opened = self.store.create_session(&user, expires_at).await?;
        tracing::info!(user = %user.name, ?address, "signed in");
        Ok(opened)
    }

    /// Counts an attempt against the name's and the address's allowances.
    fn allow_attempt(&self, name: &str, address: Option<IpAddr>) -> Result<(), SignInError> {
        let clock = DefaultClock::default();
        let wait = |not_until: governor::NotUntil<_>| SignInError::TooMany {
            retry_after_secs: not_until.wait_time_from(clock.now()).as_secs().max(1),
        };
        if let Some(address) = address {
            if self.by_address.len() > REMEMBERED_KEYS {
                self.by_address.retain_recent();
            }
            self.by_address.check_key(&address).map_err(wait)?;
        }
        if self.by_name.len() > REMEMBERED_KEYS {
            self.by_name.retain_recent();
        }
        self.by_name.check_key(&name.to_string()).map_err(wait)
    }

    /// Sets the user's password, and signs every browser of theirs out.
    pub async fn set_password(&self, user: &User, password: &str) -> Result<(), SignInError> {
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| SignInError::Invalid(e.to_string()))?
            .map_err(SignInError::Invalid)?;
        self.store.set_password_hash(&user.id, Some(&hash)).await?;
        self.store.end_sessions_of(&user.id).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only_and_short_passwords_are_refused() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(!verify_password("correct horse battery", None), "no password, no match");
        assert!(!verify_password("x", Some("not a hash")));
        assert!(hash_password("short").unwrap_err().contains("at least 8"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "a fresh salt each time");
    }
}
