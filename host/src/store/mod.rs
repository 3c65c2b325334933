//! The only place that speaks SQL. One query text serves SQLite and PostgreSQL (through sqlx's
//! `Any` driver, with `$N` placeholders both understand); the few statements that must differ
//! (acquiring work) branch on [`Backend`].

mod agents;
mod approvals;
mod catalog;
mod chats;
mod liveness;
mod plugins;
mod policy;
mod replicas;
mod secrets;
mod usage;
mod users;
mod work;
mod workspaces;

pub use approvals::{ApprovalScope, ApprovalStatus, NewApproval, ToolApproval};
pub use catalog::{ModelRecord, Pricing, ProviderRecord, Source};
pub use chats::{Chat, ChatStatus, Message, NewChat, QueuedMessage};
pub use liveness::WorkerLock;
pub use plugins::{UploadState, UploadedPlugin};
pub use policy::{Denial, PolicyVersion};
pub use replicas::Replica;
pub use secrets::StoredSecret;
pub use usage::{UsageFilter, UsageGroup, UsageGrouping, UsageTotals};
pub use users::{ListedUser, Session, TokenInfo, User, hash_token};
pub use work::{MAX_QUEUED, TokenUsage};
pub use workspaces::{NewWorkspace, Workspace, WorkspaceStatus};

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Whether the database was unavailable (unreachable, restarting, out of disk, locked)
    /// rather than refusing what was asked: the same write may succeed later.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(error) = self else { return false };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: connection exceptions, insufficient resources (disk full), the
                // server shutting down or starting, a database not accepting connections (55000
                // on connecting), serialization failures and deadlocks.
                let postgres = code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || ["55000", "40001", "40P01"].contains(&code.as_ref());
                // SQLite (extended codes; the primary code is the low byte): busy, locked, I/O
                // error, disk full, cannot open. Their codes have at most 4 digits, PostgreSQL's 5.
                let sqlite =
                    code.len() < 5 && code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14));
                postgres || sqlite
            }
            _ => false,
        }
    }
}

/// A connection pool and the backend it speaks to.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// The pool's connections: (in use, idle).
    pub fn pool_connections(&self) -> (usize, usize) {
        let idle = self.pool.num_idle();
        ((self.pool.size() as usize).saturating_sub(idle), idle)
    }

    /// A transaction that writes. SQLite's default (deferred) transaction takes the write lock
    /// at its first write and fails at once with "database is locked" when another connection
    /// wrote since it began reading (the busy timeout cannot help there); `BEGIN IMMEDIATE`
    /// takes the lock up front and waits its turn.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Connects to `url` and brings the schema up to date.
    pub async fn open(url: &str) -> StoreResult<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = match backend {
            // SQLite has one writer: a small pool, and WAL so readers never wait for it.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;").await?;
                            Ok(())
                        })
                    })
                    // A transaction SQLite rolled back on its own (a full disk, an I/O error)
                    // leaves sqlx counting it open, and every later `begin` on that connection
                    // fails: such a connection is closed instead of pooled. The ping first
                    // lets a rollback queued by the dropped transaction run.
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Connection;
                            conn.ping().await?;
                            Ok(!conn.is_in_transaction())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(16).connect(url).await?,
        };
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// The SQLite database in `data_dir`, created on first use.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("toolhost.db").display())
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Connections of the pool in use now, and the most it opens (for benchmarks and metrics).
    pub fn connections(&self) -> (u32, u32) {
        let open = self.pool.size();
        (open.saturating_sub(self.pool.num_idle() as u32), self.pool.options().get_max_connections())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A new sortable unique id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A name the database holds for an enum (a status, a kind), read back; a name this server does
/// not know means the row was written by something else.
pub(crate) fn parse_stored<T: std::str::FromStr>(what: &str, text: &str) -> StoreResult<T> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("unknown {what} `{text}`")))
}
