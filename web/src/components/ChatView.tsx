// One chat: its messages and the step being streamed, the queue, and the composer.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Message, type MessagePart, type QueuedMessage } from "../api";
import { chats } from "../chats";
import { ChatStream, type LivePart } from "../stream";
import { Composer } from "./Composer";
import { Markdown, Thinking, ToolCall } from "./Parts";

type ToolResult = Extract<MessagePart, { type: "tool-result" }>;

function textOf(content: MessagePart[]): string {
  return content
    .filter((p): p is Extract<MessagePart, { type: "text" }> => p.type === "text")
    .map((p) => p.text)
    .join("\n");
}

function UserMessage({ message, onEdit }: { message: Message; onEdit: (text: string) => Promise<void> }) {
  const [editing, setEditing] = useState<string | null>(null);
  if (editing !== null) {
    return (
      <article class="message user editing" aria-label="your message, editing">
        <textarea aria-label="Edit your message" value={editing} onInput={(e) => setEditing(e.currentTarget.value)} />
        <div class="actions">
          <button onClick={() => onEdit(editing).then(() => setEditing(null))}>Save and run again</button>
          <button class="link" onClick={() => setEditing(null)}>
            Cancel
          </button>
        </div>
      </article>
    );
  }
  return (
    <article class="message user" aria-label="your message">
      <div class="body">{textOf(message.content)}</div>
      <button class="link edit" onClick={() => setEditing(textOf(message.content))} aria-label="Edit this message">
        Edit
      </button>
    </article>
  );
}

function AssistantMessage({ message, results }: { message: Message; results: Map<string, ToolResult> }) {
  return (
    <article class="message assistant" aria-label="answer">
      {message.content.map((part, i) => {
        switch (part.type) {
          case "text":
            return <Markdown key={i} text={part.text} />;
          case "reasoning":
            return <Thinking key={i} text={part.text} />;
          case "tool-call":
            return <ToolCall key={i} name={part.tool_name} args={part.args} result={results.get(part.tool_call_id)} />;
          default:
            return null;
        }
      })}
      {message.usage && (
        <footer class="usage">
          {message.model} · {message.usage.input_tokens} in / {message.usage.output_tokens} out
          {message.usage.cost_usd != null && ` · $${message.usage.cost_usd.toFixed(4)}`}
        </footer>
      )}
    </article>
  );
}

function LiveStep({ parts }: { parts: LivePart[] }) {
  return (
    <article class="message assistant live" aria-label="answer, streaming" aria-busy="true">
      {parts.map((part, i) => {
        if (!part) return null;
        switch (part.kind) {
          case "text":
            return <Markdown key={i} text={part.text} />;
          case "reasoning":
            return <Thinking key={i} text={part.text} />;
          case "tool_call":
            return <ToolCall key={i} name={part.tool_name} args={part.args} />;
        }
      })}
    </article>
  );
}

function Queue({ chatId, queued }: { chatId: string; queued: QueuedMessage[] }) {
  const [error, setError] = useState<string | null>(null);
  const act = (work: Promise<unknown>) => work.then(() => setError(null), (e) => setError((e as Error).message));
  if (queued.length === 0) return null;
  return (
    <section class="queue" aria-label="Queued messages">
      <h2>Queued</h2>
      <ol>
        {queued.map((q) => (
          <li key={q.id}>
            <span class="body">{textOf(q.content)}</span>
            <button onClick={() => act(api.promoteQueued(chatId, q.id))}>Send now</button>
            <button class="link" onClick={() => act(api.deleteQueued(chatId, q.id))} aria-label="Delete queued message">
              Delete
            </button>
          </li>
        ))}
      </ol>
      {error && <p class="error">{error}</p>}
    </section>
  );
}

export function ChatView({ chatId }: { chatId: string }) {
  const stream = useMemo(() => new ChatStream(chatId), [chatId]);
  useEffect(() => () => stream.close(), [stream]);
  const [error, setError] = useState<string | null>(null);
  const bottom = useRef<HTMLDivElement>(null);

  const messages = stream.messages.value;
  const parts = stream.parts.value;
  const results = new Map<string, ToolResult>();
  for (const message of messages) {
    for (const part of message.content) if (part.type === "tool-result") results.set(part.tool_call_id, part);
  }
  const status = stream.status.value;

  useEffect(() => bottom.current?.scrollIntoView({ block: "end" }), [messages.length, parts]);

  const act = (work: Promise<unknown>) =>
    work.then(
      () => setError(null),
      (e) => setError((e as Error).message),
    );

  return (
    <main class="chat" aria-label="Chat">
      <header class="chat-header">
        <h1 class="chat-title">{chats.value.find((c) => c.id === chatId)?.title ?? ""}</h1>
        <span class={`status ${status}`} role="status">
          {status}
        </span>
        {stream.connection.value !== "live" && (
          <span class="connection" role="status">
            {stream.connection.value === "connecting" ? "Connecting…" : "Reconnecting…"}
          </span>
        )}
      </header>
      <div class="messages" aria-live="polite">
        {messages.map((m) =>
          m.role === "user" ? (
            <UserMessage key={m.id} message={m} onEdit={(text) => act(api.edit(chatId, m.id, text).then(() => stream.restart()))} />
          ) : m.role === "assistant" ? (
            <AssistantMessage key={m.id} message={m} results={results} />
          ) : null,
        )}
        {parts.length > 0 && <LiveStep parts={parts} />}
        {stream.notice.value && <p class="notice">{stream.notice.value}</p>}
        {status === "error" && stream.lastError.value && (
          <p class="error" role="alert">
            {stream.lastError.value}
          </p>
        )}
        <div ref={bottom} />
      </div>
      <Queue chatId={chatId} queued={stream.queue.value} />
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <Composer
        busy={status === "running" || status === "pending"}
        onSend={(text) => act(api.send(chatId, text))}
        onInterrupt={() => act(api.interrupt(chatId))}
      />
    </main>
  );
}
