// How each part of a message looks: text as Markdown, thinking folded, and each tool call in
// one card with its result, drawn by the renderer of its tool's family.

import type { ComponentChildren } from "preact";
import type { MessagePart } from "../api";
import { markdownToHtml } from "../markdown";
import { navigate } from "../router";

type ToolResult = Extract<MessagePart, { type: "tool-result" }>;

export function Markdown({ text }: { text: string }) {
  return <div class="markdown" dangerouslySetInnerHTML={{ __html: markdownToHtml(text) }} />;
}

export function Thinking({ text }: { text: string }) {
  return (
    <details class="thinking">
      <summary>Thinking</summary>
      <p>{text}</p>
    </details>
  );
}

function asText(value: unknown): string {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function parsedArgs(args: unknown): Record<string, unknown> {
  if (args && typeof args === "object") return args as Record<string, unknown>;
  if (typeof args === "string") {
    try {
      const parsed = JSON.parse(args);
      if (parsed && typeof parsed === "object") return parsed;
    } catch {
      // Still streaming: not JSON yet.
    }
  }
  return {};
}

/** The id of a chat a tool's result names (a spawned subagent). */
function chatIdIn(result: unknown): string | null {
  const text = asText(result);
  const match = /"chat_id"\s*:\s*"([^"]+)"/.exec(text) ?? /chat_id[=: ]+([A-Za-z0-9_-]{8,})/.exec(text);
  return match ? match[1] : null;
}

function Card({ name, summary, error, children }: { name: string; summary?: string; error?: boolean; children?: ComponentChildren }) {
  return (
    <section class={`tool ${error ? "failed" : ""}`} aria-label={`tool ${name}`}>
      <header>
        <span class="tool-name">{name}</span>
        {summary && <span class="tool-summary">{summary}</span>}
        {error && <span class="badge error">failed</span>}
      </header>
      {children}
    </section>
  );
}

function Output({ result }: { result?: ToolResult }) {
  if (!result) return <p class="pending">Running…</p>;
  return (
    <>
      <pre class="output">{asText(result.result)}</pre>
      {result.images?.map((image, i) => (
        <img key={i} class="screenshot" alt="screenshot" src={`data:${image.media_type};base64,${image.data}`} />
      ))}
    </>
  );
}

/** A tool call and (once it came) its result. */
export function ToolCall({ name, args, result }: { name: string; args: unknown; result?: ToolResult }) {
  const input = parsedArgs(args);
  const error = result?.is_error;
  switch (name) {
    case "execute":
    case "process_start":
      return (
        <Card name={name} summary={String(input.command ?? "")} error={error}>
          <Output result={result} />
        </Card>
      );
    case "read_file":
    case "write_file":
    case "edit_files":
    case "list_files":
      return (
        <Card name={name} summary={String(input.path ?? "")} error={error}>
          {name === "write_file" && typeof input.content === "string" && <pre class="diff added">{input.content}</pre>}
          {name === "edit_files" && <pre class="diff">{asText(input.edits ?? input)}</pre>}
          <Output result={result} />
        </Card>
      );
    case "spawn_agent":
    case "spawn_computer_use_agent": {
      const child = result && chatIdIn(result.result);
      return (
        <Card name={name} summary={String(input.title ?? "")} error={error}>
          <p class="prompt">{String(input.prompt ?? "")}</p>
          {child && (
            <a
              class="child-chat"
              href={`/chats/${child}`}
              onClick={(e) => {
                e.preventDefault();
                navigate(`/chats/${child}`);
              }}
            >
              Open the agent's chat
            </a>
          )}
          {!result && <p class="pending">Starting…</p>}
        </Card>
      );
    }
    default:
      return (
        <Card name={name} error={error}>
          <pre class="args">{asText(args)}</pre>
          <Output result={result} />
        </Card>
      );
  }
}
