//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.0. Request and response schemas
//! are generated from the Rust types the handlers use, so they cannot drift from the code.

use axum::Json;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::chats::{CreateChat, EditMessage, SendMessage};
use crate::chat::events::{ChatEvent, WatchEvent};
use crate::chat::service::SendOutcome;
use crate::store::{Chat, Message, QueuedMessage};

pub async fn openapi() -> Json<Value> {
    Json(document())
}

fn body<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": generator.subschema_for::<T>()}}})
}

fn ok<T: JsonSchema>(generator: &mut SchemaGenerator, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": generator.subschema_for::<T>()}}})
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
        "get": operation("Live changes to the caller's chats (SSE, or a WebSocket on upgrade)", json!({"200": ok::<WatchEvent>(&mut g, "A stream of these events")})),
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
        "parameters": [chat_path[0].clone(), {"name": "message_id", "in": "path", "required": true, "schema": {"type": "integer"}}],
        "patch": with_body(operation("Edit a user message: later messages and the queue are dropped, and the chat runs again", json!({"200": {"description": "{message: Message}"}})), body::<EditMessage>(&mut g)),
    }));
    let queued_path = json!([chat_path[0].clone(), {"name": "queued_id", "in": "path", "required": true, "schema": {"type": "integer"}}]);
    paths.insert("/chats/{id}/queue/{queued_id}".into(), json!({"parameters": queued_path, "delete": operation("Delete a queued message", json!({"204": {"description": "Deleted"}}))}));
    paths.insert("/chats/{id}/queue/{queued_id}/promote".into(), json!({"parameters": queued_path, "post": operation("Run a queued message next (interrupting a running turn)", json!({"200": ok::<Chat>(&mut g, "The chat")}))}));
    paths.insert("/chats/{id}/interrupt".into(), json!({"parameters": chat_path, "post": operation("Stop the running turn, keeping what was streamed", json!({"200": ok::<Chat>(&mut g, "The chat, waiting")}))}));
    paths.insert("/chats/{id}/archive".into(), json!({"parameters": chat_path, "post": operation("Archive the chat and its descendants", json!({"204": {"description": "Archived"}}))}));
    paths.insert("/chats/{id}/unarchive".into(), json!({"parameters": chat_path, "post": operation("Unarchive the chat and its descendants", json!({"204": {"description": "Unarchived"}}))}));
    paths.insert("/chats/{id}/stream".into(), json!({
        "parameters": [chat_path[0].clone(), {"name": "after", "in": "query", "required": false, "schema": {"type": "integer"}, "description": "Sequence number of the last event seen; Last-Event-ID wins"}],
        "get": operation("The chat's events: a snapshot, then live (SSE with `Accept: text/event-stream`, or a WebSocket on upgrade)", json!({"200": ok::<ChatEvent>(&mut g, "A stream of these events")})),
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
