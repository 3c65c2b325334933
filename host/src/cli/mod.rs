//! The `toolhost` command line.

mod bench;
mod mcp;
mod native;
mod plugin;
mod plugin_admin;
mod policy;
pub mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::domain::ChatKind;

#[derive(Debug, Parser)]
#[command(
    name = "toolhost",
    version,
    about = "A self-hosted AI agent server whose tools are sandboxed WebAssembly components"
)]
pub struct Cli {
    /// TOML configuration file (values in it lose to environment variables and flags).
    #[arg(long, global = true, env = "TOOLHOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where Toolhost keeps its state and caches [default: ~/.local/share/toolhost].
    #[arg(long, global = true, env = "TOOLHOST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Load every `*.wasm` plugin in DIR, after the bundled ones.
    #[arg(long, global = true, env = "TOOLHOST_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Database: postgres://USER@HOST/DB [default: SQLite in the data directory].
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on [default: 127.0.0.1:7420].
        #[arg(long, env = "TOOLHOST_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// Model new chats use unless they name one.
        #[arg(long, env = "TOOLHOST_MODEL", value_name = "NAME")]
        model: Option<String>,
        /// Where the other replicas on the same PostgreSQL database reach this one
        /// (http://HOST:PORT) [default: the listening address].
        #[arg(long, env = "TOOLHOST_RELAY_ADDRESS", value_name = "URL")]
        relay_address: Option<String>,
        /// Where Prometheus scrapes /metrics without a token, or `off` [default: 127.0.0.1:9464].
        #[arg(long, env = "TOOLHOST_METRICS_LISTEN", value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Create or update the database schema.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Inspect, call, benchmark and scaffold tool plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Check, set and explain the tool policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Serve MCP over stdio (for desktop clients that start a command): each message goes to a
    /// running server's `/mcp`, with your API token.
    Mcp {
        /// The server [default: the configured listening address].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The workspace the tools work in (one of yours; GET /api/v1/workspaces lists them).
        #[arg(long, value_name = "ID")]
        workspace: Option<String>,
        /// Your API token (`toolhost tokens create USER`, or Settings in the web app).
        #[arg(long, env = "TOOLHOST_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        token: String,
    },
    /// The native (unsandboxed) read_file, one call per process: the baseline `plugin bench`
    /// compares spawning a process per call against.
    #[command(name = "__native-read-file", hide = true)]
    NativeReadFile {
        #[arg(long)]
        workspace: PathBuf,
        #[arg(long)]
        args: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        name: String,
        /// Let the user manage server-wide settings.
        #[arg(long)]
        admin: bool,
        /// Give the user a password to sign in to the web app with (asked for on the terminal,
        /// or read as the first line of standard input).
        #[arg(long)]
        password: bool,
    },
    /// Set a user's password (asked for, or read from standard input); their browsers are
    /// signed out.
    SetPassword { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create an API token for a user and print it (it cannot be shown again).
    Create {
        /// The user's name.
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List loaded plugins (version, hash, capabilities, tools) and refused ones.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Load one component file on its own and show what it is, imports and offers.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run one tool call and print its result as JSON.
    Call(CallArgs),
    /// Call a tool repeatedly and report latency; the last line is JSON.
    Bench(BenchArgs),
    /// Create a new plugin crate that builds with one command.
    New {
        /// Plugin name: lowercase letters, digits and `-`, starting with a letter.
        name: String,
        /// Folder to create the crate in [default: current folder].
        #[arg(long, value_name = "DIR", default_value = ".")]
        path: PathBuf,
        /// Path of the toolhost-plugin SDK crate [default: the one this binary was built from]
        /// (Rust plugins).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
        /// The language to write the plugin in.
        #[arg(long, value_enum, default_value_t = scaffold::Language::Rust)]
        lang: scaffold::Language,
    },
    /// Upload a component to a running server, which checks and compiles it and puts it in
    /// service on every replica (admins); shows progress until it is loaded or refused.
    Install {
        file: PathBuf,
        /// Store it disabled (`plugin enable` loads it later).
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Load an uploaded plugin again on every replica (by name or SHA-256).
    Enable {
        plugin: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Take an uploaded plugin out of service on every replica, keeping it stored.
    Disable {
        plugin: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove an uploaded plugin from every replica; calls already running finish.
    Remove {
        plugin: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// A running server to talk to, and who is asking.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server [default: the configured listening address].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// An admin's API token (`toolhost tokens create ADMIN`).
    #[arg(long, env = "TOOLHOST_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a Cedar policy file against the schema and the installed plugins: errors and
    /// warnings as FILE:LINE:COLUMN; exit 1 when invalid.
    Check { file: PathBuf },
    /// Put a policy file in force (as `PUT /api/v1/policy` does); refused if invalid.
    Set {
        file: PathBuf,
        /// Recorded as the version's author.
        #[arg(long, default_value = "cli")]
        author: String,
    },
    /// Show which tools a chat sees and calls and which capabilities they may use, and why.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// An existing chat's id.
    #[arg(long, conflicts_with_all = ["kind", "depth", "owner", "admin", "model"])]
    pub chat: Option<String>,
    /// A synthetic chat of this kind [default: root].
    #[arg(long, value_parser = chat_kind)]
    pub kind: Option<ChatKind>,
    /// Its depth [default: 0 for root chats, else 1].
    #[arg(long)]
    pub depth: Option<i64>,
    /// Its owner's user name.
    #[arg(long)]
    pub owner: Option<String>,
    /// Its owner is an admin.
    #[arg(long)]
    pub admin: bool,
    /// Its model config name.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Tool name, e.g. `read_file`.
    pub tool: String,
    /// The tool's arguments as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub args: String,
    /// Workspace root the call may use through `workspace-fs`.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Kind of chat the call is made for.
    #[arg(long, value_parser = chat_kind, default_value_t = ChatKind::Root)]
    pub kind: ChatKind,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub call: CallArgs,
    /// Number of measured calls.
    #[arg(long, default_value_t = 2000)]
    pub calls: u32,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let (listen, model, relay_address, metrics_listen) = match &self.command {
            Command::Serve { listen, model, relay_address, metrics_listen } => {
                (listen.clone(), model.clone(), relay_address.clone(), metrics_listen.clone())
            }
            _ => (None, None, None, None),
        };
        Overrides {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            plugins_dir: self.plugins_dir.clone(),
            database_url: self.database_url.clone(),
            listen,
            model,
            relay_address,
            metrics_listen,
        }
    }
}

/// Runs the command; `Err` is an unexpected failure, reported as one line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = cli.overrides();
    match cli.command {
        Command::Plugin(PluginCommand::New { name, path, sdk, lang }) => {
            scaffold::new_plugin(&name, &path, sdk.as_deref(), lang)
        }
        Command::Plugin(command) => {
            let config = Config::load(&overrides)?;
            match command {
                PluginCommand::List { json } => plugin::list(&config, json).await,
                PluginCommand::Inspect { file, json } => plugin::inspect(&config, &file, json).await,
                PluginCommand::Call(args) => plugin::call(&config, &args).await,
                PluginCommand::Bench(args) => bench::bench(&config, &args).await,
                PluginCommand::Install { file, disabled, server } => {
                    plugin_admin::install(&config, &file, &server, disabled).await
                }
                PluginCommand::Enable { plugin, server } => {
                    plugin_admin::set_enabled(&config, &plugin, &server, true).await
                }
                PluginCommand::Disable { plugin, server } => {
                    plugin_admin::set_enabled(&config, &plugin, &server, false).await
                }
                PluginCommand::Remove { plugin, server } => plugin_admin::remove(&config, &plugin, &server).await,
                PluginCommand::New { .. } => unreachable!("handled above"),
            }
        }
        Command::Policy(command) => {
            let config = Config::load(&overrides)?;
            match command {
                PolicyCommand::Check { file } => policy::check(&config, &file).await,
                PolicyCommand::Set { file, author } => policy::set(&config, &file, &author).await,
                PolicyCommand::Explain(args) => policy::explain(&config, &args).await,
            }
        }
        Command::Mcp { url, workspace, token } => mcp::run(&Config::load(&overrides)?, url, workspace, token).await,
        Command::NativeReadFile { workspace, args } => native::read_file_process(&workspace, &args),
        Command::Serve { .. } => {
            crate::server::serve(&Config::load(&overrides)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            crate::app::open_store(&Config::load(&overrides)?).await?;
            eprintln!("toolhost: the database schema is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Users(UsersCommand::Create { name, admin, password }) => {
            let hash = match password.then(|| read_password(&name)).transpose() {
                Ok(hash) => hash,
                Err(why) => return refuse(why),
            };
            let store = crate::app::open_store(&Config::load(&overrides)?).await?;
            match store.create_user(&name, admin).await {
                Ok(user) => {
                    if let Some(hash) = &hash {
                        store.set_password_hash(&user.id, Some(hash)).await?;
                    }
                    println!("{}", serde_json::to_string(&user)?);
                    eprintln!(
                        "toolhost: created {} `{name}`; {}",
                        if admin { "admin" } else { "user" },
                        if hash.is_some() {
                            "they sign in to the web app with their password"
                        } else {
                            "give them a password with `toolhost users set-password NAME`, or a token with `toolhost tokens create NAME`"
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::store::StoreError::Conflict(message)) => refuse(message),
                Err(e) => Err(e.into()),
            }
        }
        Command::Users(UsersCommand::SetPassword { name }) => {
            let store = crate::app::open_store(&Config::load(&overrides)?).await?;
            let Some(user) = store.find_user(&name).await? else {
                return refuse(format!(
                    "there is no user `{name}`; create one with `toolhost users create {name} --password`"
                ));
            };
            let hash = match read_password(&name) {
                Ok(hash) => hash,
                Err(why) => return refuse(why),
            };
            store.set_password_hash(&user.id, Some(&hash)).await?;
            store.end_sessions_of(&user.id).await?;
            eprintln!("toolhost: `{name}` has a new password; their browsers were signed out");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tokens(TokensCommand::Create { user, label }) => {
            let store = crate::app::open_store(&Config::load(&overrides)?).await?;
            let Some(found) = store.find_user(&user).await? else {
                return refuse(format!("there is no user `{user}`; create one with `toolhost users create {user}`"));
            };
            println!("{}", store.create_token(&found, &label).await?);
            eprintln!("toolhost: this token is shown once; send it as `Authorization: Bearer TOKEN`");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a password for `name` (twice on a terminal, else the first line of standard input)
/// and hashes it; the error says what was wrong.
fn read_password(name: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: ")).map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    crate::accounts::hash_password(&password).map_err(|why| format!("{why}; nothing was changed"))
}

/// Prints `message` as the one-line reason and returns the exit code for a refused request.
fn refuse(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("toolhost: {message}");
    Ok(ExitCode::from(2))
}

/// Reads `--kind`, naming the kinds there are when the value is none of them.
fn chat_kind(text: &str) -> Result<ChatKind, String> {
    use strum::VariantNames;
    text.parse().map_err(|_| format!("`{text}` is not a chat kind; use one of: {}", ChatKind::VARIANTS.join(", ")))
}
