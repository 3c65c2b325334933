// The chat's workspace beside the chat: its state with start and stop, the git changes its
// tools made (live from the git watch stream) as a diff, and its desktop when it has one,
// watch-only until the person explicitly takes over.

import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Workspace } from "../api";
import { GitWatch, filesOf, type Repository } from "../gitwatch";
import { Alert, useAction } from "./common";

function DiffFile({ name, lines }: { name: string; lines: string[] }) {
  return (
    <details class="diff-file" open>
      <summary>{name || "changes"}</summary>
      <pre class="diff" aria-label={`diff of ${name}`}>
        {lines.map((line, i) => {
          const kind = line.startsWith("+") && !line.startsWith("+++")
            ? "added"
            : line.startsWith("-") && !line.startsWith("---")
              ? "removed"
              : line.startsWith("@@")
                ? "hunk"
                : "same";
          return (
            <span key={i} class={kind}>
              {line}
              {"\n"}
            </span>
          );
        })}
      </pre>
    </details>
  );
}

function RepositoryChanges({ repository }: { repository: Repository }) {
  const files = useMemo(() => filesOf(repository.diff), [repository.diff]);
  return (
    <section class="repository" aria-label={`repository ${repository.path}`}>
      <h3>
        {repository.path === "." ? "workspace" : repository.path}
        {repository.branch && <span class="badge">{repository.branch}</span>}
      </h3>
      <ul class="changed-files">
        {repository.changed_files.map((f) => (
          <li key={f.path}>
            <code class="git-status">{f.status}</code> {f.path}
          </li>
        ))}
      </ul>
      {files.map((f, i) => (
        <DiffFile key={`${f.name}-${i}`} name={f.name} lines={f.lines} />
      ))}
      {repository.diff_truncated && <p class="muted">The diff is longer than the server sends; the rest is cut.</p>}
    </section>
  );
}

function Changes({ chatId, status }: { chatId: string; status: string }) {
  const watch = useMemo(() => new GitWatch(chatId), [chatId]);
  useEffect(() => () => watch.close(), [watch]);
  // A turn that ended may have changed files the last snapshot predates.
  useEffect(() => {
    if (status === "waiting") watch.refresh();
  }, [status, watch]);
  const snapshot = watch.snapshot.value;
  if (!snapshot) return <p class="loading">{watch.connected.value ? "Looking for changes…" : "Connecting…"}</p>;
  if (snapshot.error) return <Alert>{snapshot.error}</Alert>;
  if (snapshot.repositories.length === 0)
    return <p class="empty">No git changes yet: they appear here when the chat's tools touch a repository.</p>;
  return (
    <div class="changes">
      {snapshot.repositories.map((r) => (
        <RepositoryChanges key={r.path} repository={r} />
      ))}
    </div>
  );
}

function Desktop({ chatId }: { chatId: string }) {
  const screen = useRef<HTMLDivElement>(null);
  const [control, setControl] = useState(false);
  const [state, setState] = useState<"connecting" | "connected" | "closed">("connecting");
  useEffect(() => {
    let rfb: import("@novnc/novnc").default | null = null;
    let cancelled = false;
    setState("connecting");
    // noVNC is loaded only when a desktop is shown: the chat screens do not carry it.
    void import("@novnc/novnc").then(({ default: RFB }) => {
      if (cancelled || !screen.current) return;
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      const url = `${scheme}://${window.location.host}/api/v1/chats/${encodeURIComponent(chatId)}/desktop${control ? "?control=true" : ""}`;
      rfb = new RFB(screen.current, url, { shared: true });
      rfb.viewOnly = !control;
      rfb.scaleViewport = true;
      rfb.addEventListener("connect", () => setState("connected"));
      rfb.addEventListener("disconnect", () => setState("closed"));
    });
    return () => {
      cancelled = true;
      rfb?.disconnect();
    };
  }, [chatId, control]);
  return (
    <section class="desktop" aria-label="Desktop">
      <div class="row">
        <span role="status">
          {state === "connected" ? (control ? "You are in control" : "Watching") : state === "connecting" ? "Connecting…" : "The desktop is not reachable"}
        </span>
        {control ? (
          <button class="secondary" onClick={() => setControl(false)}>
            Give back control
          </button>
        ) : (
          <button
            class="secondary"
            onClick={() => confirm("Take over the desktop? The agent is told that you did.") && setControl(true)}
          >
            Take over
          </button>
        )}
      </div>
      <div class="screen" ref={screen} />
    </section>
  );
}

function StatusLine({ workspace, onChanged }: { workspace: Workspace; onChanged: (w: Workspace) => void }) {
  const [run, error, busy] = useAction();
  const running = workspace.status === "ready" || workspace.status === "starting";
  return (
    <div class="workspace-status">
      <div class="row">
        <strong>{workspace.name}</strong>
        <span class={`badge ${workspace.status}`} role="status">
          {workspace.status.replace("_", " ")}
        </span>
        {running ? (
          <button class="secondary" disabled={busy} onClick={() => run(() => api.stopWorkspace(workspace.id).then(onChanged))}>
            Stop
          </button>
        ) : (
          <button disabled={busy} onClick={() => run(() => api.startWorkspace(workspace.id).then(onChanged))}>
            Start
          </button>
        )}
      </div>
      {workspace.detail && <p class="muted detail">{workspace.detail}</p>}
      <Alert>{error}</Alert>
    </div>
  );
}

/** The panel for a chat whose workspace is `workspaceId` (null: it has none yet). */
export function WorkspacePanel({ chatId, workspaceId, status }: { chatId: string; workspaceId: string | null; status: string }) {
  const [tab, setTab] = useState<"changes" | "desktop">("changes");
  const [workspace, setWorkspace] = useState<Workspace | null>(null);
  const [error, setError] = useState<string | null>(null);
  const settling = workspace?.status === "created" || workspace?.status === "starting";
  useEffect(() => {
    if (!workspaceId) return;
    let current = true;
    const load = () =>
      api.workspace(workspaceId).then(
        (w) => current && (setWorkspace(w), setError(null)),
        (e) => current && setError((e as Error).message),
      );
    void load();
    // Starting takes a while: follow it until it settles.
    const timer = settling ? setInterval(() => void load(), 2000) : undefined;
    return () => {
      current = false;
      clearInterval(timer);
    };
  }, [workspaceId, status, settling]);
  return (
    <aside class="workspace-panel" aria-label="Workspace">
      {!workspaceId ? (
        <p class="empty">This chat has no workspace yet. Ask the agent to make one (or to work on a project).</p>
      ) : (
        <>
          <Alert>{error}</Alert>
          {workspace && <StatusLine workspace={workspace} onChanged={setWorkspace} />}
          <nav class="tabs" aria-label="Workspace views">
            <button class={tab === "changes" ? "tab current" : "tab"} aria-pressed={tab === "changes"} onClick={() => setTab("changes")}>
              Changes
            </button>
            <button class={tab === "desktop" ? "tab current" : "tab"} aria-pressed={tab === "desktop"} onClick={() => setTab("desktop")}>
              Desktop
            </button>
          </nav>
          {tab === "changes" ? <Changes chatId={chatId} status={status} /> : <Desktop chatId={chatId} />}
        </>
      )}
    </aside>
  );
}
