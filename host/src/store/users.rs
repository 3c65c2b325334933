//! Users, their passwords, API tokens and browser sessions. Only a token's (or a session
//! cookie's) SHA-256 is stored; the token itself is shown once. A password is kept as the
//! Argon2id hash `accounts` makes.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, new_id, now_ms};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A 32-byte random secret, as hex.
fn random_secret() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    hex::encode(secret)
}

/// An API token as its owner sees it listed (never the token itself).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created_at: i64,
}

/// A user as admins see them in the list: never a password or a token.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ListedUser {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    /// They can sign in to the web app.
    pub has_password: bool,
    /// API tokens they hold.
    pub tokens: i64,
    pub created_at: i64,
}

/// A signed-in browser: who, and the token its state-changing requests must carry.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// A SQL boolean as either database returns it through `Any` (SQLite: an integer).
fn flag(row: &sqlx::any::AnyRow, column: &str) -> StoreResult<bool> {
    Ok(match row.try_get::<bool, _>(column) {
        Ok(value) => value,
        Err(_) => row.try_get::<i64, _>(column)? != 0,
    })
}

fn user_from(row: &sqlx::any::AnyRow) -> StoreResult<User> {
    Ok(User { id: row.try_get("id")?, name: row.try_get("name")?, is_admin: row.try_get::<i64, _>("is_admin")? != 0 })
}

impl Store {
    pub async fn create_user(&self, name: &str, is_admin: bool) -> StoreResult<User> {
        if self.find_user(name).await?.is_some() {
            return Err(StoreError::Conflict(format!("a user named `{name}` already exists")));
        }
        let id = new_id();
        sqlx::query("INSERT INTO users (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(name)
            .bind(i64::from(is_admin))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(User { id, name: name.to_string(), is_admin })
    }

    pub async fn find_user(&self, name: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, name, is_admin FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, name, is_admin FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> StoreResult<Vec<ListedUser>> {
        let rows = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, u.password_hash IS NOT NULL AS has_password, u.created_at, \
             (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id) AS tokens FROM users u ORDER BY u.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ListedUser {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    is_admin: row.try_get::<i64, _>("is_admin")? != 0,
                    has_password: flag(row, "has_password")?,
                    tokens: row.try_get("tokens")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Makes the user an admin or a member; false when there is no such user.
    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET is_admin = $1 WHERE id = $2")
            .bind(i64::from(is_admin))
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Creates a token for `user` and returns it; this is the only time it is readable.
    pub async fn create_token(&self, user: &User, label: &str) -> StoreResult<String> {
        Ok(self.create_listed_token(user, label).await?.1)
    }

    /// Creates a token for `user`: as it is listed, and the token itself.
    pub async fn create_listed_token(&self, user: &User, label: &str) -> StoreResult<(TokenInfo, String)> {
        let token = format!("th_{}", random_secret());
        let info = TokenInfo { id: new_id(), label: label.to_string(), created_at: now_ms() };
        sqlx::query("INSERT INTO api_tokens (id, user_id, label, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&info.id)
            .bind(&user.id)
            .bind(label)
            .bind(hash_token(&token))
            .bind(info.created_at)
            .execute(&self.pool)
            .await?;
        Ok((info, token))
    }

    /// The user a token belongs to, if it is a valid token.
    pub async fn authenticate(&self, token: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Sets (or, with `None`, removes) the user's password hash.
    pub async fn set_password_hash(&self, user_id: &str, hash: Option<&str>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The user named `name` and their password hash, if they have one.
    pub async fn user_with_password(&self, name: &str) -> StoreResult<Option<(User, Option<String>)>> {
        let row = sqlx::query("SELECT id, name, is_admin, password_hash FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((user_from(&row)?, row.try_get("password_hash")?))).transpose()
    }

    /// The user's API tokens, newest first.
    pub async fn tokens(&self, user_id: &str) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, label, created_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: row.try_get("id")?,
                    label: row.try_get("label")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Revokes one of the user's tokens; false when they have no such token.
    pub async fn revoke_token(&self, user_id: &str, token_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(token_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Opens a browser session for the user until `expires_at`: the cookie's value (returned
    /// only now) and the session.
    pub async fn create_session(&self, user: &User, expires_at: i64) -> StoreResult<(String, Session)> {
        let cookie = random_secret();
        let csrf_token = random_secret();
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_token(&cookie))
        .bind(&user.id)
        .bind(&csrf_token)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok((cookie, Session { user: user.clone(), csrf_token, expires_at }))
    }

    /// The live session a cookie's value opens, if any.
    pub async fn session(&self, cookie: &str) -> StoreResult<Option<Session>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_admin, s.csrf_token, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(hash_token(cookie))
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Session {
                user: user_from(&row)?,
                csrf_token: row.try_get("csrf_token")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends the session a cookie's value opens (signing out), and any that expired.
    pub async fn end_session(&self, cookie: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1 OR expires_at <= $2")
            .bind(hash_token(cookie))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of the user (their password changed).
    pub async fn end_sessions_of(&self, user_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&self.pool).await?;
        Ok(())
    }
}
