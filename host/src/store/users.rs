//! Users and API tokens. Only a token's SHA-256 is stored; the token itself is shown once.

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

    pub async fn count_users(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Creates a token for `user` and returns it; this is the only time it is readable.
    pub async fn create_token(&self, user: &User, label: &str) -> StoreResult<String> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("th_{}", hex::encode(secret));
        sqlx::query("INSERT INTO api_tokens (id, user_id, label, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(new_id())
            .bind(&user.id)
            .bind(label)
            .bind(hash_token(&token))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(token)
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
}
