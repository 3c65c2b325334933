// One chat: its messages and the step being streamed, the queue, and the composer.

import { memo } from "preact/compat";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type ApprovalDecision, type Chat, type Message, type MessagePart, type QueuedMessage, type ToolApproval } from "../api";
import { chats, markSeen } from "../chats";
import { ChatStream, type LivePart } from "../stream";
import { Composer } from "./Composer";
import { Markdown, Thinking, ToolCall } from "./Parts";
import { WorkspacePanel } from "./Workspace";

type ToolResult = Extract<MessagePart, { type: "tool-result" }>;

function textOf(content: MessagePart[]): string {
  return content
    .filter((p): p is Extract<MessagePart, { type: "text" }> => p.type === "text")
    .map((p) => p.text)
    .join("\n");
}

// Messages are drawn again only when they change: a streaming step redraws itself, not the
// thousand messages above it.
const UserMessage = memo(function UserMessage({
  message,
  onEdit,
}: {
  message: Message;
  onEdit: (messageId: number, text: string) => Promise<void>;
}) {
  const [editing, setEditing] = useState<string | null>(null);
  if (editing !== null) {
    return (
      <article class="message user editing" aria-label="your message, editing">
        <textarea aria-label="Edit your message" value={editing} onInput={(e) => setEditing(e.currentTarget.value)} />
        <div class="actions">
          <button onClick={() => onEdit(message.id, editing).then(() => setEditing(null))}>Save and run again</button>
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
});

const AssistantMessage = memo(function AssistantMessage({
  message,
  results,
}: {
  message: Message;
  results: Map<string, ToolResult>;
}) {
  return (
    <article class="message assistant" aria-label="answer">
      {message.content.map((part, i) => {
        switch (part.type) {
          case "text":
            return <Markdown key={i} text={part.text} />;
          case "reasoning":
            return <Thinking key={i} text={part.text} />;
          case "tool-call":
            return (
              <ToolCall key={i} name={part.tool_name} args={part.args} result={results.get(part.tool_call_id)} callId={part.tool_call_id} />
            );
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
});

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

/** Tool calls waiting for the person: each approved once, approved for the chat, or denied
 * with a reason the model reads. */
function Approvals({ chatId, waiting }: { chatId: string; waiting: ToolApproval[] }) {
  const [error, setError] = useState<string | null>(null);
  const [reasons, setReasons] = useState<Record<string, string>>({});
  if (waiting.length === 0) return null;
  const answer = (approval: ToolApproval, decision: ApprovalDecision) =>
    api
      .answerApproval(chatId, approval.id, decision, decision === "deny" ? reasons[approval.id] || undefined : undefined)
      .then(() => setError(null), (e) => setError((e as Error).message));
  return (
    <section class="approvals" aria-label="Tool calls waiting for your approval">
      <h2>Waiting for your approval</h2>
      <ol>
        {waiting.map((a) => (
          <li key={a.id}>
            <div class="call">
              <code>{a.tool}</code> <code class="args">{JSON.stringify(a.arguments)}</code>
              <span class="rule" title="The policy rule that asks">
                {a.rule} · until {new Date(a.deadline_at).toLocaleTimeString()}
              </span>
            </div>
            <div class="actions">
              <button onClick={() => answer(a, "approve_once")}>Approve</button>
              <button class="secondary" onClick={() => answer(a, "approve_for_chat")}>
                Approve for this chat
              </button>
              <input
                aria-label={`Why deny ${a.tool}`}
                placeholder="Reason (optional)"
                value={reasons[a.id] ?? ""}
                onInput={(e) => setReasons({ ...reasons, [a.id]: (e.target as HTMLInputElement).value })}
              />
              <button class="secondary" onClick={() => answer(a, "deny")}>
                Deny
              </button>
            </div>
          </li>
        ))}
      </ol>
      {error && <p class="error">{error}</p>}
    </section>
  );
}

/** The workspace a chat works in: its own, or (a subagent's) its root chat's. */
async function workspaceOf(chatId: string): Promise<{ chat: Chat; workspaceId: string | null }> {
  const chat = await api.chat(chatId);
  if (chat.workspace_id || chat.root_chat_id === chat.id) return { chat, workspaceId: chat.workspace_id };
  const root = await api.chat(chat.root_chat_id);
  return { chat, workspaceId: root.workspace_id };
}

/** What the chat's answers cost so far, from the usage stored with each. */
function Usage({ messages }: { messages: Message[] }) {
  const { input, output, cost, priced } = useMemo(() => {
    const sum = { input: 0, output: 0, cost: 0, priced: false };
    for (const m of messages) {
      if (!m.usage) continue;
      sum.input += m.usage.input_tokens;
      sum.output += m.usage.output_tokens;
      if (m.usage.cost_usd != null) {
        sum.cost += m.usage.cost_usd;
        sum.priced = true;
      }
    }
    return sum;
  }, [messages]);
  if (input + output === 0) return null;
  return (
    <span class="chat-usage" title="tokens in / out for this chat">
      {input.toLocaleString()} in / {output.toLocaleString()} out{priced && ` · $${cost.toFixed(4)}`}
    </span>
  );
}

const PANEL_KEY = "toolhost.workspace-panel";
/** Messages drawn when a chat opens, and how many more each step back in its history adds:
 * a long chat opens at once, and earlier messages are drawn when asked for. */
const FIRST_SHOWN = 60;
const MORE_SHOWN = 200;

/** The button above the messages drawn, which draws earlier ones. */
function EarlierMessages({ hidden, onShow }: { hidden: number; onShow: () => void }) {
  return (
    <button class="link earlier" data-hidden={hidden} onClick={onShow}>
      Show {Math.min(hidden, MORE_SHOWN)} earlier messages ({hidden} not shown)
    </button>
  );
}

export function ChatView({ chatId }: { chatId: string }) {
  const stream = useMemo(() => new ChatStream(chatId), [chatId]);
  useEffect(() => () => stream.close(), [stream]);
  const [error, setError] = useState<string | null>(null);
  const bottom = useRef<HTMLDivElement>(null);
  const [shownCount, setShownCount] = useState(FIRST_SHOWN);
  const showEarlier = useCallback(() => setShownCount((n) => n + MORE_SHOWN), []);

  const messages = stream.messages.value;
  const parts = stream.parts.value;
  const results = useMemo(() => {
    const byCall = new Map<string, ToolResult>();
    for (const message of messages) {
      for (const part of message.content) if (part.type === "tool-result") byCall.set(part.tool_call_id, part);
    }
    return byCall;
  }, [messages]);
  const status = stream.status.value;
  const [panel, setPanel] = useState(() => localStorage.getItem(PANEL_KEY) === "open");
  const [workspace, setWorkspace] = useState<{ chat: Chat; workspaceId: string | null } | null>(null);
  const listed = chats.value.find((c) => c.id === chatId);

  useEffect(() => {
    let current = true;
    // A workspace is bound during a turn: look again whenever the chat's state changes.
    workspaceOf(chatId).then(
      (found) => current && setWorkspace(found),
      () => undefined,
    );
    return () => {
      current = false;
    };
  }, [chatId, status]);
  useEffect(() => markSeen(chatId), [chatId, listed?.updated_at]);
  useEffect(() => {
    const keys = (e: KeyboardEvent) => {
      if (e.altKey && e.key.toLowerCase() === "w") {
        e.preventDefault();
        togglePanel();
      }
    };
    window.addEventListener("keydown", keys);
    return () => window.removeEventListener("keydown", keys);
  }, []);
  const togglePanel = () =>
    setPanel((open) => {
      localStorage.setItem(PANEL_KEY, open ? "closed" : "open");
      return !open;
    });

  useEffect(() => bottom.current?.scrollIntoView({ block: "end" }), [messages.length, parts]);

  const act = useCallback(
    (work: Promise<unknown>) =>
      work.then(
        () => setError(null),
        (e) => setError((e as Error).message),
      ),
    [],
  );
  const edit = useCallback(
    (messageId: number, text: string) => act(api.edit(chatId, messageId, text).then(() => stream.restart())),
    [act, chatId, stream],
  );

  const model = listed?.model ?? workspace?.chat.model;
  return (
    <div class={`chat-area ${panel ? "with-panel" : ""}`}>
    <main class="chat" aria-label="Chat">
      <header class="chat-header">
        <h1 class="chat-title">{listed?.title ?? workspace?.chat.title ?? ""}</h1>
        <span class={`status ${status}`} role="status">
          {status}
        </span>
        {model && <span class="chat-model">{model}</span>}
        <Usage messages={messages} />
        {stream.connection.value !== "live" && (
          <span class="connection" role="status">
            {stream.connection.value === "connecting" ? "Connecting…" : "Reconnecting…"}
          </span>
        )}
        {listed && !listed.parent_chat_id && (
          <button
            class="link"
            onClick={() => act(listed.archived ? api.unarchive(chatId) : api.archive(chatId))}
            title={listed.archived ? "Back to the chats" : "Archive this chat and its subagents"}
          >
            {listed.archived ? "Unarchive" : "Archive"}
          </button>
        )}
        <button class="secondary panel-toggle" aria-pressed={panel} onClick={togglePanel} title="Workspace (Alt+W)">
          Workspace
        </button>
      </header>
      <div class="messages" aria-live="polite">
        {messages.length > shownCount && <EarlierMessages hidden={messages.length - shownCount} onShow={showEarlier} />}
        {messages.slice(-shownCount).map((m) =>
          m.role === "user" ? (
            <UserMessage key={m.id} message={m} onEdit={edit} />
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
      <Approvals chatId={chatId} waiting={stream.approvals.value} />
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
    {panel && <WorkspacePanel chatId={chatId} workspaceId={workspace?.workspaceId ?? null} status={status} />}
    </div>
  );
}
