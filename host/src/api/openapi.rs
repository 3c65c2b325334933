//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.0. Request and response schemas
//! are generated from the Rust types the handlers use, so they cannot drift from the code.

use axum::Json;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::approvals::{Answer, ApprovalList};
use super::catalog::{ModelList, ProviderList};
use super::chats::{ChildList, CreateChat, EditMessage, SendMessage};
use super::plugins::{PluginList, PluginPatch};
use super::policy::{AuditPage, ExplainRequest, ExplainResponse, NewPolicy, PolicyView, VersionText, Versions};
use super::prompts::Prompt;
use super::secrets::{SecretInput, SecretList};
use super::sessions::{CreatedToken, NewToken, SessionView, SignIn, TokenList, UserView};
use super::usage::UsageReport;
use super::users::{NewUser, UserList, UserPatch};
use super::workspaces::{CreateWorkspace, TemplateList, WorkspaceList};
use crate::catalog::{ModelInput, ModelView, NewProvider, ProviderPatch, ProviderView};
use crate::chat::events::{ChatEvent, WatchEvent};
use crate::chat::service::SendOutcome;
use crate::plugin_admin::PluginView;
use crate::policy::Saved;
use crate::store::Workspace;
use crate::store::{Chat, Message, QueuedMessage, ToolApproval};
use crate::vault::SecretInfo;

pub async fn openapi() -> Json<Value> {
    Json(document())
}

fn body<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": generator.subschema_for::<T>()}}})
}

fn ok<T: JsonSchema>(generator: &mut SchemaGenerator, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": generator.subschema_for::<T>()}}})
}

/// An event stream: Server-Sent Events (each `data:` line one of these, as JSON), or the same
/// events as JSON WebSocket messages after an upgrade.
/// A stream ends with a `shutdown` event when the server stops.
fn stream<T: JsonSchema>(generator: &mut SchemaGenerator, description: &str) -> Value {
    let schema =
        json!({"anyOf": [generator.subschema_for::<T>(), generator.subschema_for::<super::stream::ShutdownNotice>()]});
    // The event as Server-Sent Events frame it: `data` is one of these events as JSON text.
    let frame = json!({"type": "object", "required": ["data"], "properties": {"event": {"type": "string"}, "id": {"type": "string"}, "data": {"type": "string"}, "retry": {"type": "integer"}}});
    json!({"description": description, "content": {"text/event-stream": {"schema": frame}, "application/json": {"schema": schema}}})
}

/// A stored row's number, as path and query parameters take it (a 64-bit integer).
fn id_integer() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX})
}

/// A new model config: a `ModelInput` that names the model and its provider.
fn new_model_body(generator: &mut SchemaGenerator) -> Value {
    let input = generator.subschema_for::<ModelInput>();
    let named = json!({"type": "object", "required": ["name", "provider"], "properties": {"name": {"type": "string", "nullable": false}, "provider": {"type": "string", "nullable": false}}});
    json!({"required": true, "content": {"application/json": {"schema": {"allOf": [input, named]}}}})
}

fn operation(summary: &str, responses: Value) -> Value {
    let mut responses = responses;
    responses["default"] = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({"summary": summary, "responses": responses})
}

fn with_body(mut op: Value, body: Value) -> Value {
    op["requestBody"] = body;
    op
}

pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let chat_path = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let mut paths = Map::new();
    paths.insert("/chats".into(), json!({
        "get": operation("The caller's chats, most recently updated first (query: archived, limit 1-200, offset)", json!({"200": {"description": "{chats: [Chat]}"}})),
        "post": with_body(operation("Create a chat with its first message", json!({"201": ok::<Chat>(&mut g, "The new chat, pending")})), body::<CreateChat>(&mut g)),
    }));
    paths.insert("/chats/watch".into(), json!({
        "get": operation("Live changes to the caller's chats (SSE, or a WebSocket on upgrade)", json!({"200": stream::<WatchEvent>(&mut g, "A stream of these events")})),
    }));
    paths.insert("/chats/{id}".into(), json!({"parameters": chat_path, "get": operation("A chat's metadata", json!({"200": ok::<Chat>(&mut g, "The chat")}))}));
    paths.insert("/chats/{id}/messages".into(), json!({
        "parameters": chat_path,
        "get": operation("Messages and queued messages", json!({"200": {"description": "{messages: [Message], queued_messages: [QueuedMessage]}", "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {"messages": {"type": "array", "items": g.subschema_for::<Message>()}, "queued_messages": {"type": "array", "items": g.subschema_for::<QueuedMessage>()}}
        }}}}})),
        "post": with_body(operation("Send a message (queued while the chat is busy; 429 when the queue is full)", json!({"200": ok::<SendOutcome>(&mut g, "Sent or queued")})), body::<SendMessage>(&mut g)),
    }));
    paths.insert("/chats/{id}/messages/{message_id}".into(), json!({
        "parameters": [chat_path[0].clone(), {"name": "message_id", "in": "path", "required": true, "schema": id_integer()}],
        "patch": with_body(operation("Edit a user message: later messages and the queue are dropped, and the chat runs again", json!({"200": {"description": "{message: Message}"}})), body::<EditMessage>(&mut g)),
    }));
    let queued_path =
        json!([chat_path[0].clone(), {"name": "queued_id", "in": "path", "required": true, "schema": id_integer()}]);
    paths.insert("/chats/{id}/queue/{queued_id}".into(), json!({"parameters": queued_path, "delete": operation("Delete a queued message", json!({"204": {"description": "Deleted"}}))}));
    paths.insert("/chats/{id}/queue/{queued_id}/promote".into(), json!({"parameters": queued_path, "post": operation("Run a queued message next (interrupting a running turn)", json!({"200": ok::<Chat>(&mut g, "The chat")}))}));
    paths.insert("/chats/{id}/interrupt".into(), json!({"parameters": chat_path, "post": operation("Stop the running turn, keeping what was streamed", json!({"200": ok::<Chat>(&mut g, "The chat, waiting")}))}));
    paths.insert("/chats/{id}/archive".into(), json!({"parameters": chat_path, "post": operation("Archive the chat and its descendants", json!({"204": {"description": "Archived"}}))}));
    paths.insert("/chats/{id}/unarchive".into(), json!({"parameters": chat_path, "post": operation("Unarchive the chat and its descendants", json!({"204": {"description": "Unarchived"}}))}));
    paths.insert("/chats/{id}/stream".into(), json!({
        "parameters": [chat_path[0].clone(), {"name": "after", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "Sequence number of the last event seen; Last-Event-ID wins"}],
        "get": operation("The chat's events: a snapshot, then live (SSE with `Accept: text/event-stream`, or a WebSocket on upgrade)", json!({"200": stream::<ChatEvent>(&mut g, "A stream of these events")})),
    }));
    let id_path = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Id or name"}]);
    paths.insert("/providers".into(), json!({
        "get": operation("Providers (admins); keys are never returned", json!({"200": ok::<ProviderList>(&mut g, "The providers")})),
        "post": with_body(operation("Add a provider (admins)", json!({"201": ok::<ProviderView>(&mut g, "The provider")})), body::<NewProvider>(&mut g)),
    }));
    paths.insert("/providers/{id}".into(), json!({
        "parameters": id_path,
        "patch": with_body(operation("Change a provider's base URL or key (admins); null clears", json!({"200": ok::<ProviderView>(&mut g, "The provider")})), body::<ProviderPatch>(&mut g)),
        "delete": operation("Delete a provider no model uses (admins)", json!({"204": {"description": "Deleted"}})),
    }));
    paths.insert("/models".into(), json!({
        "get": operation("Every model, the default, and whether each is usable (and why not)", json!({"200": ok::<ModelList>(&mut g, "The models")})),
        "post": with_body(operation("Add a model config (admins)", json!({"201": ok::<ModelView>(&mut g, "The model")})), new_model_body(&mut g)),
    }));
    paths.insert("/models/{id}".into(), json!({
        "parameters": id_path,
        "patch": with_body(operation("Change a model config (admins)", json!({"200": ok::<ModelView>(&mut g, "The model")})), body::<ModelInput>(&mut g)),
        "delete": operation("Delete a model config (admins); its chats use the default", json!({"204": {"description": "Deleted"}})),
    }));
    paths.insert("/usage".into(), json!({
        "parameters": [
            {"name": "from", "in": "query", "required": false, "schema": {"type": "string", "format": "date"}, "description": "YYYY-MM-DD (an RFC 3339 time is taken too), inclusive"},
            {"name": "to", "in": "query", "required": false, "schema": {"type": "string", "format": "date"}, "description": "YYYY-MM-DD (inclusive; an RFC 3339 time is taken too, exclusive)"},
            {"name": "user", "in": "query", "required": false, "schema": {"type": "string"}, "description": "A user's name or `all` (admins)"}
        ],
        "get": operation("Tokens and cost by model, root chat (and user)", json!({"200": ok::<UsageReport>(&mut g, "The report")})),
    }));
    paths.insert("/settings/system-prompt".into(), json!({
        "get": operation("The deployment's system prompt (admins)", json!({"200": ok::<Prompt>(&mut g, "The prompt")})),
        "put": with_body(operation("Set the deployment's system prompt (admins)", json!({"200": ok::<Prompt>(&mut g, "The prompt")})), body::<Prompt>(&mut g)),
    }));
    paths.insert("/users/me/prompt".into(), json!({
        "get": operation("The caller's own prompt", json!({"200": ok::<Prompt>(&mut g, "The prompt")})),
        "put": with_body(operation("Set the caller's own prompt", json!({"200": ok::<Prompt>(&mut g, "The prompt")})), body::<Prompt>(&mut g)),
    }));
    let mut sign_in = with_body(
        operation(
            "Sign in with a name and password: sets the session cookie (HttpOnly, SameSite=Strict); send the returned csrf_token in X-CSRF-Token with every request that changes something (10 attempts a minute per name)",
            json!({"200": ok::<SessionView>(&mut g, "The session")}),
        ),
        body::<SignIn>(&mut g),
    );
    sign_in["security"] = json!([]);
    paths.insert("/auth/sign-in".into(), json!({"post": sign_in}));
    paths.insert("/auth/sign-out".into(), json!({
        "post": operation("End the browser's session (the cookie goes too)", json!({"204": {"description": "Signed out"}})),
    }));
    paths.insert("/auth/session".into(), json!({
        "get": operation("The browser's session, with its CSRF token", json!({"200": ok::<SessionView>(&mut g, "The session")})),
    }));
    paths.insert("/users/me/tokens".into(), json!({
        "get": operation("The caller's API tokens (never the tokens themselves)", json!({"200": ok::<TokenList>(&mut g, "The tokens")})),
        "post": with_body(operation("Create an API token for the caller: shown this once", json!({"201": ok::<CreatedToken>(&mut g, "The token")})), body::<NewToken>(&mut g)),
    }));
    paths.insert(
        "/users/me/tokens/{id}".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "delete": operation("Revoke one of the caller's API tokens", json!({"204": {"description": "Revoked"}})),
        }),
    );
    paths.insert("/users".into(), json!({
        "get": operation("Every user, with whether they can sign in and how many tokens they hold (admins)", json!({"200": ok::<UserList>(&mut g, "The users")})),
        "post": with_body(operation("Create a user, with a password to sign in with (admins); 409 when the name is taken", json!({"201": ok::<UserView>(&mut g, "The user")})), body::<NewUser>(&mut g)),
    }));
    paths.insert(
        "/users/{id}".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "patch": with_body(operation("Change a user's role or password (admins): a new password signs their browsers out; 409 when admins take away their own role", json!({"200": ok::<UserView>(&mut g, "The user")})), body::<UserPatch>(&mut g)),
        }),
    );
    paths.insert(
        "/users/{id}/tokens".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": operation("A user's API tokens, never the tokens themselves (admins)", json!({"200": ok::<TokenList>(&mut g, "The tokens")})),
        }),
    );
    paths.insert(
        "/users/{id}/tokens/{token_id}".into(),
        json!({
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "token_id", "in": "path", "required": true, "schema": {"type": "string"}}
            ],
            "delete": operation("Revoke a user's API token (admins)", json!({"204": {"description": "Revoked"}})),
        }),
    );
    paths.insert("/secrets".into(), json!({
        "get": operation("Plugin secrets with their bindings, never their values (admins)", json!({"200": ok::<SecretList>(&mut g, "The secrets")})),
    }));
    paths.insert(
        "/secrets/{name}".into(),
        json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}],
            "put": with_body(operation("Store or replace a secret bound to plugins and hosts (admins); 400 names a host or name that is not one", json!({"200": ok::<SecretInfo>(&mut g, "The secret, without its value")})), body::<SecretInput>(&mut g)),
            "delete": operation("Delete a secret (admins)", json!({"204": {"description": "Deleted"}})),
        }),
    );
    // Also accepted as `application/wasm`; documented as the generic type that tools (and
    // schemathesis) know how to send.
    let component = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    paths.insert("/plugins".into(), json!({
        "get": operation("Every plugin: bundled, from the plugins directory and uploaded, with where each stands on this replica (admins)", json!({"200": ok::<PluginList>(&mut g, "The plugins")})),
        "post": with_body(operation("Upload a plugin component (admins; `Content-Type: application/wasm` or `application/octet-stream`): checked at once as at load (422 plugin_refused names what is wrong, such as an import the host does not provide), then compiled and put in service on every replica in the background; `enabled=false` keeps it stored and disabled", json!({
            "202": ok::<PluginView>(&mut g, "Stored; being checked and compiled (GET /plugins/{id} follows it)"),
            "200": ok::<PluginView>(&mut g, "These bytes were uploaded before"),
        })), component),
    }));
    paths["/plugins"]["post"]["parameters"] =
        json!([{"name": "enabled", "in": "query", "required": false, "schema": {"type": "boolean"}}]);
    paths.insert("/plugins/{id}".into(), json!({
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "An uploaded plugin's SHA-256, or a plugin's name"}],
        "get": operation("One plugin (admins)", json!({"200": ok::<PluginView>(&mut g, "The plugin")})),
        "patch": with_body(operation("Enable, disable or set limit overrides of an uploaded plugin, on every replica (admins); 409 for a bundled or configured plugin", json!({"200": ok::<PluginView>(&mut g, "The plugin")})), body::<PluginPatch>(&mut g)),
        "delete": operation("Remove an uploaded plugin from every replica; calls already running finish (admins)", json!({"204": {"description": "Removed"}})),
    }));
    paths.insert("/policy".into(), json!({
        "get": operation("The tool policy in force, and its schema (admins)", json!({"200": ok::<PolicyView>(&mut g, "The policy")})),
        "put": with_body(operation("Replace the tool policy (admins): validated first; 422 with line-precise `details.problems` when invalid, leaving the policy in force untouched", json!({"200": ok::<Saved>(&mut g, "The new version and its warnings")})), body::<NewPolicy>(&mut g)),
    }));
    paths.insert("/policy/versions".into(), json!({
        "get": operation("Every accepted policy version, newest first (admins)", json!({"200": ok::<Versions>(&mut g, "The versions")})),
    }));
    let version_path = json!([{"name": "version", "in": "path", "required": true, "schema": id_integer()}]);
    paths.insert("/policy/versions/{version}".into(), json!({
        "parameters": version_path,
        "get": operation("One policy version with its text (admins)", json!({"200": ok::<VersionText>(&mut g, "The version")})),
    }));
    paths.insert("/policy/versions/{version}/restore".into(), json!({
        "parameters": version_path,
        "post": operation("Put an earlier version (0: the built-in default) back in force, as a new version (admins)", json!({"200": ok::<Saved>(&mut g, "The new version")})),
    }));
    paths.insert("/policy/explain".into(), json!({
        "post": with_body(operation("For a chat or a synthetic one: every tool's visibility and callability and every capability, with the deciding rules (admins)", json!({"200": ok::<ExplainResponse>(&mut g, "The explanation")})), body::<ExplainRequest>(&mut g)),
    }));
    paths.insert("/policy/audit".into(), json!({
        "parameters": [
            {"name": "before", "in": "query", "required": false, "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX}, "description": "The previous page's `next_before`"},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 500}, "description": "1 to 500, default 100"}
        ],
        "get": operation("Denied calls and capability uses, newest first (admins)", json!({"200": ok::<AuditPage>(&mut g, "A page of denials")})),
    }));
    let workspace_path = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    paths.insert("/templates".into(), json!({
        "get": operation("Templates workspaces can be made from (admins also see the ones refused, and why)", json!({"200": ok::<TemplateList>(&mut g, "The templates")})),
    }));
    paths.insert("/templates/reload".into(), json!({
        "post": operation("Read the templates again from the bundled set and the templates folder (admins)", json!({"200": ok::<TemplateList>(&mut g, "The templates")})),
    }));
    paths.insert("/workspaces".into(), json!({
        "get": operation("The caller's workspaces, newest first", json!({"200": ok::<WorkspaceList>(&mut g, "The workspaces")})),
        "post": with_body(operation("Make a workspace from a template and start it (422 invalid_parameters lists each problem; 409 conflict when the caller has a workspace of that name)", json!({"201": ok::<Workspace>(&mut g, "The workspace, starting")})), body::<CreateWorkspace>(&mut g)),
    }));
    paths.insert("/workspaces/{id}".into(), json!({
        "parameters": workspace_path,
        "get": operation("One of the caller's workspaces", json!({"200": ok::<Workspace>(&mut g, "The workspace")})),
        "delete": operation("Delete a workspace: its processes, its files; its chats are unbound", json!({"204": {"description": "Deleted"}})),
    }));
    paths.insert("/workspaces/{id}/start".into(), json!({
        "parameters": workspace_path,
        "post": operation("Start a workspace (runs its startup script) unless it is building or ready", json!({"200": ok::<Workspace>(&mut g, "The workspace")})),
    }));
    paths.insert("/workspaces/{id}/stop".into(), json!({
        "parameters": workspace_path,
        "post": operation("Stop a workspace: its processes are killed, its files kept", json!({"200": ok::<Workspace>(&mut g, "The workspace")})),
    }));
    paths.insert("/chats/{id}/children".into(), json!({
        "parameters": chat_path,
        "get": operation("The chats this chat spawned (its subagents), oldest first; each carries parent_chat_id and root_chat_id", json!({"200": ok::<ChildList>(&mut g, "The children")})),
    }));
    paths.insert("/chats/{id}/approvals".into(), json!({
        "parameters": chat_path,
        "get": operation("The chat's tool calls waiting for the owner's approval (the policy's require_approval), oldest first", json!({"200": ok::<ApprovalList>(&mut g, "The waiting calls")})),
    }));
    paths.insert("/chats/{id}/approvals/{approval_id}".into(), json!({
        "parameters": [chat_path[0].clone(), {"name": "approval_id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "post": with_body(operation("Answer a waiting tool call: approve_once, approve_for_chat, or deny with a reason the model reads (409 when already answered)", json!({"200": ok::<ToolApproval>(&mut g, "The answered approval")})), body::<Answer>(&mut g)),
    }));
    paths.insert("/approvals".into(), json!({
        "get": operation("Every tool call waiting for the caller's approval, across their chats and subagents", json!({"200": ok::<ApprovalList>(&mut g, "The waiting calls")})),
    }));
    paths.insert("/chats/{id}/git/watch".into(), json!({
        "parameters": chat_path,
        "get": operation("WebSocket: snapshots (branch, remote, changed files, diff) of the git repositories the chat's tools touched; send `refresh` for a new one", json!({"101": {"description": "Switching to the WebSocket protocol"}})),
    }));
    paths.insert("/chats/{id}/desktop".into(), json!({
        "parameters": chat_path,
        "get": {
            "summary": "WebSocket: the desktop of the chat's workspace as RFB (VNC) in binary frames, for noVNC; watch only unless `control=true` (a take-over the model is told of)",
            "parameters": [{"name": "control", "in": "query", "required": false, "schema": {"type": "boolean"}}],
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol"},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
    }));
    let mut schemas = g.take_definitions(true);
    schemas.insert("Error".into(), json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
    }));
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Toolhost API", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    })
}
