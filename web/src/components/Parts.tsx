// How each part of a message looks: text as Markdown, thinking folded, and each tool call in
// one card with its result, drawn by the renderer of its tool's family.

import type { ComponentChildren } from "preact";
import { useMemo } from "preact/hooks";
import type { MessagePart } from "../api";
import { markdownToHtml } from "../markdown";
import { navigate } from "../router";
import { toolProgress } from "../stream";

type ToolResult = Extract<MessagePart, { type: "tool-result" }>;

export function Markdown({ text }: { text: string }) {
  const html = useMemo(() => markdownToHtml(text), [text]);
  return <div class="markdown" dangerouslySetInnerHTML={{ __html: html }} />;
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

function Output({ result, callId }: { result?: ToolResult; callId?: string }) {
  if (!result) {
    const progress = callId ? toolProgress.value.get(callId) : undefined;
    return (
      <p class="pending" role="status">
        {progress ? progress.message : "Running…"}
        {progress?.fraction != null && <progress value={progress.fraction} max={1} />}
      </p>
    );
  }
  return (
    <>
      <pre class="output">{asText(result.result)}</pre>
      {result.images?.map((image, i) => (
        <img key={i} class="screenshot" alt="screenshot" src={`data:${image.media_type};base64,${image.data}`} />
      ))}
    </>
  );
}

/** A file's edits as the lines each takes out and puts in. */
function EditDiff({ path, edits }: { path: string; edits: { search?: string; replace?: string }[] }) {
  return (
    <pre class="diff" aria-label={`edits of ${path}`}>
      <span class="hunk">{`${path}\n`}</span>
      {edits.map((edit, i) => [
        ...String(edit.search ?? "").split("\n").map((line, j) => (
          <span key={`${i}-${j}-`} class="removed">{`- ${line}\n`}</span>
        )),
        ...String(edit.replace ?? "").split("\n").map((line, j) => (
          <span key={`${i}-${j}+`} class="added">{`+ ${line}\n`}</span>
        )),
      ])}
    </pre>
  );
}

/** A tool call and (once it came) its result. */
export function ToolCall({
  name,
  args,
  result,
  callId,
}: {
  name: string;
  args: unknown;
  result?: ToolResult;
  callId?: string;
}) {
  const input = parsedArgs(args);
  const error = result?.is_error;
  switch (name) {
    case "execute":
    case "process_start":
      return (
        <Card name={name} summary={String(input.command ?? "")} error={error}>
          <Output result={result} callId={callId} />
        </Card>
      );
    case "read_file":
    case "write_file":
    case "list_files":
      return (
        <Card name={name} summary={String(input.path ?? "")} error={error}>
          {name === "write_file" && typeof input.content === "string" && (
            <pre class="diff" aria-label={`new content of ${String(input.path ?? "")}`}>
              {input.content.split("\n").map((line, i) => (
                <span key={i} class="added">
                  {`+ ${line}`}
                  {"\n"}
                </span>
              ))}
            </pre>
          )}
          <Output result={result} callId={callId} />
        </Card>
      );
    case "edit_files": {
      const files = Array.isArray(input.files) ? (input.files as { path?: string; edits?: { search?: string; replace?: string }[] }[]) : [];
      return (
        <Card name={name} summary={files.map((f) => f.path).join(", ")} error={error}>
          {files.map((file, i) => (
            <EditDiff key={i} path={String(file.path ?? "")} edits={file.edits ?? []} />
          ))}
          <Output result={result} callId={callId} />
        </Card>
      );
    }
    case "create_workspace":
    case "start_workspace":
      return (
        <Card name={name} summary={String(input.template_id ?? input.workspace_id ?? "")} error={error}>
          {!result && <p class="pending" role="status">{(callId && toolProgress.value.get(callId)?.message) || "Starting the workspace…"}</p>}
          {result && <pre class="output">{asText(result.result)}</pre>}
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
          <Output result={result} callId={callId} />
        </Card>
      );
  }
}
