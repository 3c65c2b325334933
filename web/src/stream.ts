// A chat's live stream (Server-Sent Events from GET /api/v1/chats/{id}/stream), folded into
// what the chat view shows: stored messages, the parts of the step being streamed, status and
// queue.
//
// Every numbered event moves the cursor; a reconnect (the browser's own, which sends the last
// id as Last-Event-ID, or ours after a shutdown notice or a lag) resumes after it, and the
// server sends each later event exactly once. A stored message completes the step whose parts
// were streamed: they are dropped when it arrives, so nothing is shown twice.
//
// Events are applied in order, a frame's worth at a time: opening a chat replays its history
// as one event per message, and drawing after each of a thousand would freeze the page.

import { batch, signal } from "@preact/signals";
import type { ChatStatus, Message, QueuedMessage, ToolApproval } from "./api";

/** A part of the step being streamed, as its deltas have built it so far. */
export type LivePart =
  | { kind: "text"; text: string }
  | { kind: "reasoning"; text: string }
  | { kind: "tool_call"; tool_call_id: string; tool_name: string; args: string };

type PartDelta =
  | { kind: "text"; index: number; text: string }
  | { kind: "reasoning"; index: number; text: string }
  | { kind: "tool_call"; index: number; tool_call_id: string | null; tool_name: string | null; args_delta: string };

export type Connection = "connecting" | "live" | "reconnecting";

/** What running tool calls report doing (their plugins' `progress`), by call id: live only,
 * and gone once the call's result is stored. */
export const toolProgress = signal<ReadonlyMap<string, { message: string; fraction: number | null }>>(new Map());

/** Longest wait between attempts to reach a server that went away. */
const MAX_BACKOFF_MS = 10_000;

export class ChatStream {
  readonly messages = signal<Message[]>([]);
  readonly parts = signal<LivePart[]>([]);
  readonly status = signal<ChatStatus>("waiting");
  readonly lastError = signal<string | null>(null);
  readonly queue = signal<QueuedMessage[]>([]);
  /** Tool calls waiting for the person's approval, oldest first. */
  readonly approvals = signal<ToolApproval[]>([]);
  readonly notice = signal<string | null>(null);
  readonly connection = signal<Connection>("connecting");

  private cursor = 0;
  private source: EventSource | null = null;
  private backoff = 500;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  /** Every message shown, by id: a message is added once however often it is sent. */
  private shown = new Set<number>();
  /** Events received since the last frame, applied together by `flush`. */
  private pending: (() => void)[] = [];
  private flushScheduled = false;
  /** During a flush: the lists being built, assigned to the signals once at its end. */
  private nextMessages: Message[] | null = null;
  private nextParts: LivePart[] | null = null;

  constructor(readonly chatId: string) {
    this.open();
  }

  /** Everything again from the start (after an edit dropped later messages). */
  restart() {
    this.pending = [];
    this.messages.value = [];
    this.parts.value = [];
    this.shown.clear();
    this.nextMessages = null;
    this.nextParts = null;
    this.cursor = 0;
    this.reopen(0);
  }

  close() {
    this.closed = true;
    this.source?.close();
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  private open() {
    const source = new EventSource(`/api/v1/chats/${encodeURIComponent(this.chatId)}/stream?after=${this.cursor}`);
    this.source = source;
    const on = (type: string, handle: (data: any) => void) =>
      source.addEventListener(type, (event) => {
        const message = event as MessageEvent<string>;
        if (message.lastEventId) this.cursor = Math.max(this.cursor, Number(message.lastEventId));
        const data = JSON.parse(message.data);
        this.enqueue(() => handle(data));
      });
    source.onopen = () => {
      this.connection.value = "live";
      this.backoff = 500;
    };
    on("status", (e) => {
      this.status.value = e.status;
      this.lastError.value = e.last_error ?? null;
      if (e.status !== "running") this.notice.value = null;
    });
    on("message", (e) => this.addMessage(e.message));
    on("message_part", (e) => this.addDelta(e.part));
    on("queue_update", (e) => (this.queue.value = e.queued_messages));
    on("approval_request", (e: { approvals: ToolApproval[] }) => {
      const known = new Set(this.approvals.value.map((a) => a.id));
      const waiting = e.approvals.filter((a) => a.status === "pending" && !known.has(a.id));
      if (waiting.length > 0) this.approvals.value = [...this.approvals.value, ...waiting];
    });
    on("approval_answered", (e: { approvals: ToolApproval[] }) => {
      const answered = new Set(e.approvals.map((a) => a.id));
      this.approvals.value = this.approvals.value.filter((a) => !answered.has(a.id));
    });
    on("discard", () => (this.nextParts = []));
    on("retry", (e) => {
      if (e.discarded_output) this.nextParts = [];
      this.notice.value = `The model failed (${e.error}); trying again (attempt ${e.attempt}).`;
    });
    on("compacting", () => (this.notice.value = "Summarizing the older history…"));
    on("tool_progress", (e) => {
      const next = new Map(toolProgress.value);
      next.set(e.tool_call_id, { message: e.message, fraction: e.fraction ?? null });
      toolProgress.value = next;
    });
    on("shutdown", () => this.reopen(1000));
    // The server's own `error` event (a lagging reader is told to reconnect) and the
    // browser's connection error share the name: only the first has data.
    source.addEventListener("error", (event) => {
      const data = (event as MessageEvent<string>).data;
      if (data) {
        this.lastError.value = JSON.parse(data).message;
        this.reopen(0);
        return;
      }
      this.connection.value = "reconnecting";
      // The browser tries again by itself unless the server refused the stream outright.
      if (source.readyState === EventSource.CLOSED) this.reopen(this.nextBackoff());
    });
  }

  private nextBackoff() {
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    return wait;
  }

  private reopen(afterMs: number) {
    this.source?.close();
    this.connection.value = "reconnecting";
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (!this.closed) this.open();
    }, afterMs);
  }

  private enqueue(apply: () => void) {
    this.pending.push(apply);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // The next frame, or soon in a tab that draws no frames (hidden), so state stays current.
    const timer = setTimeout(() => this.flush(), 100);
    requestAnimationFrame(() => {
      clearTimeout(timer);
      this.flush();
    });
  }

  private flush() {
    if (!this.flushScheduled) return;
    this.flushScheduled = false;
    const work = this.pending;
    this.pending = [];
    batch(() => {
      for (const apply of work) apply();
      if (this.nextMessages) this.messages.value = this.nextMessages;
      if (this.nextParts) this.parts.value = this.nextParts;
      this.nextMessages = null;
      this.nextParts = null;
    });
  }

  private messagesDraft(): Message[] {
    this.nextMessages ??= [...this.messages.value];
    return this.nextMessages;
  }

  private partsDraft(): LivePart[] {
    this.nextParts ??= [...this.parts.value];
    return this.nextParts;
  }

  private addMessage(message: Message) {
    this.cursor = Math.max(this.cursor, message.seq);
    if (!this.shown.has(message.id)) {
      this.shown.add(message.id);
      this.messagesDraft().push(message);
    }
    // The message completes the step its parts were streamed in.
    if (message.role !== "user") this.nextParts = [];
    if (message.role === "tool" && toolProgress.value.size > 0) toolProgress.value = new Map();
  }

  private addDelta(delta: PartDelta) {
    const parts = this.partsDraft();
    const current = parts[delta.index];
    if (delta.kind === "tool_call") {
      const call = current?.kind === "tool_call" ? current : { kind: "tool_call" as const, tool_call_id: "", tool_name: "", args: "" };
      parts[delta.index] = {
        ...call,
        tool_call_id: delta.tool_call_id ?? call.tool_call_id,
        tool_name: delta.tool_name ?? call.tool_name,
        args: call.args + delta.args_delta,
      };
    } else {
      const text = current && current.kind === delta.kind ? current.text : "";
      parts[delta.index] = { kind: delta.kind, text: text + delta.text };
    }
  }
}
