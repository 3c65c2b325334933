// The tool policy: the Cedar text in an editor whose refused saves point at the line and
// column of each problem, the versions with their differences and restore, and explain
// ("why can this chat (not) see this tool?") for a chat or a synthetic one.

import { diffLines } from "diff";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, api, type Explanation, type ExplainRequest, type PolicyProblem } from "../../api";
import { chats } from "../../chats";
import { Alert, Verdict, useAction, useLoad, when } from "../common";

function problemsOf(error: unknown): PolicyProblem[] {
  if (error instanceof ApiError && Array.isArray(error.details?.problems)) return error.details.problems as PolicyProblem[];
  return [];
}

/** The offset in `text` of a 1-based line and column. */
function offsetOf(text: string, line: number, column: number): number {
  const lines = text.split("\n");
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) offset += lines[i].length + 1;
  return offset + Math.max(0, column - 1);
}

function Editor({
  text,
  onInput,
  problems,
  focus,
}: {
  text: string;
  onInput: (text: string) => void;
  problems: PolicyProblem[];
  focus: PolicyProblem | null;
}) {
  const area = useRef<HTMLTextAreaElement>(null);
  const gutter = useRef<HTMLDivElement>(null);
  const bad = new Set(problems.map((p) => p.line));
  const lines = text.split("\n").length;
  useEffect(() => {
    if (!focus || !area.current) return;
    const at = offsetOf(text, focus.line, focus.column);
    area.current.focus();
    area.current.setSelectionRange(at, at);
    // Bring the line into view: the textarea scrolls with the caret only on some browsers.
    const lineHeight = parseFloat(getComputedStyle(area.current).lineHeight) || 20;
    area.current.scrollTop = Math.max(0, (focus.line - 3) * lineHeight);
  }, [focus]);
  return (
    <div class="code-editor">
      <div class="gutter" ref={gutter} aria-hidden="true">
        {Array.from({ length: lines }, (_, i) => (
          <div key={i} class={bad.has(i + 1) ? "bad" : undefined}>
            {i + 1}
          </div>
        ))}
      </div>
      <textarea
        ref={area}
        aria-label="Policy (Cedar)"
        spellcheck={false}
        value={text}
        onInput={(e) => onInput(e.currentTarget.value)}
        onScroll={(e) => gutter.current && (gutter.current.scrollTop = e.currentTarget.scrollTop)}
      />
    </div>
  );
}

function Problems({ problems, onPick }: { problems: PolicyProblem[]; onPick: (p: PolicyProblem) => void }) {
  if (problems.length === 0) return null;
  return (
    <section class="problems" aria-label="Policy problems" role="alert">
      <h3>Not saved: the policy has {problems.length === 1 ? "a problem" : `${problems.length} problems`}</h3>
      <ul>
        {problems.map((p, i) => (
          <li key={i}>
            <button class="link" onClick={() => onPick(p)}>
              Line {p.line}, column {p.column}
            </button>
            : {p.message}
            {p.rule && <small> (rule {p.rule})</small>}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Diff({ from, to }: { from: string; to: string }) {
  const changes = useMemo(() => diffLines(from, to), [from, to]);
  if (changes.every((c) => !c.added && !c.removed)) return <p class="empty">No differences.</p>;
  return (
    <pre class="diff" aria-label="Differences">
      {changes.map((change, i) => {
        const mark = change.added ? "+" : change.removed ? "-" : " ";
        const text = change.value.replace(/\n$/, "").split("\n").map((line) => `${mark} ${line}`).join("\n");
        return (
          <span key={i} class={change.added ? "added" : change.removed ? "removed" : "same"}>
            {text}
            {"\n"}
          </span>
        );
      })}
    </pre>
  );
}

function Versions({ current, inForce, onRestored }: { current: string; inForce: number; onRestored: () => void }) {
  const versions = useLoad(() => api.policyVersions(), [inForce]);
  const [picked, setPicked] = useState<{ version: number; policy: string } | null>(null);
  const [run, error, busy] = useAction();
  const all = [...(versions.data?.versions ?? []), { version: 0, author: "built-in", note: "the default policy", created_at: 0 }];
  return (
    <section class="versions" aria-label="Policy versions">
      <h3>Versions</h3>
      <Alert>{versions.error ?? error}</Alert>
      <ol>
        {all.map((v) => (
          <li key={v.version} class={v.version === picked?.version ? "picked" : undefined}>
            <button
              class="link"
              onClick={() => run(async () => setPicked(await api.policyVersion(v.version)))}
              aria-label={`Compare version ${v.version}`}
            >
              v{v.version}
            </button>
            <span>
              {v.author} · {when(v.created_at)}
              {v.version === inForce && <strong> · in force</strong>}
            </span>
          </li>
        ))}
      </ol>
      {picked && (
        <>
          <h4>
            Version {picked.version} compared with the editor (- only in v{picked.version}, + only in the editor)
          </h4>
          <Diff from={picked.policy} to={current} />
          <button
            disabled={busy || picked.version === inForce}
            onClick={() => run(() => api.restorePolicy(picked.version).then(onRestored))}
          >
            Restore version {picked.version}
          </button>
        </>
      )}
    </section>
  );
}

const KINDS = ["root", "subagent", "computer-use", "mcp"];

function Explain({ policyVersion }: { policyVersion: number }) {
  const [whom, setWhom] = useState<"synthetic" | "chat">("synthetic");
  const [kind, setKind] = useState("subagent");
  const [role, setRole] = useState("member");
  const [chatId, setChatId] = useState("");
  const [filter, setFilter] = useState("");
  const [answer, setAnswer] = useState<Explanation | null>(null);
  const [run, error, busy] = useAction();
  const explain = () => {
    const request: ExplainRequest = whom === "chat" ? { chat_id: chatId } : { kind, owner_role: role };
    return run(async () => setAnswer(await api.explain(request)));
  };
  useEffect(() => {
    if (answer) void explain();
  }, [policyVersion]);
  const shown = (answer?.tools ?? []).filter((t) => t.tool.includes(filter) || t.plugin.includes(filter));
  return (
    <section class="explain" aria-label="Explain">
      <h3>Why can a chat (not) see a tool?</h3>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          void explain();
        }}
      >
        <label>
          For
          <select aria-label="Explain for" value={whom} onChange={(e) => setWhom(e.currentTarget.value as "synthetic" | "chat")}>
            <option value="synthetic">a kind of chat</option>
            <option value="chat">one chat</option>
          </select>
        </label>
        {whom === "synthetic" ? (
          <>
            <label>
              Kind
              <select aria-label="Kind of chat" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
                {KINDS.map((k) => (
                  <option key={k}>{k}</option>
                ))}
              </select>
            </label>
            <label>
              Owner
              <select aria-label="Owner" value={role} onChange={(e) => setRole(e.currentTarget.value)}>
                <option value="member">a member</option>
                <option value="admin">an admin</option>
              </select>
            </label>
          </>
        ) : (
          <label>
            Chat id
            <input
              list="explain-chats"
              value={chatId}
              placeholder="any chat's id, or pick one of yours"
              onInput={(e) => setChatId(e.currentTarget.value.trim())}
            />
            <datalist id="explain-chats">
              {chats.value.map((c) => (
                <option key={c.id} value={c.id}>
                  {c.title} ({c.kind})
                </option>
              ))}
            </datalist>
          </label>
        )}
        <button type="submit" disabled={busy || (whom === "chat" && !chatId)}>
          Explain
        </button>
      </form>
      <Alert>{error}</Alert>
      {answer && (
        <>
          <input type="search" aria-label="Filter tools" placeholder="Filter tools…" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
          <table class="grid" aria-label="Tools explained">
            <thead>
              <tr>
                <th scope="col">Tool</th>
                <th scope="col">Plugin</th>
                <th scope="col">Visible</th>
                <th scope="col">Callable</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((t) => (
                <tr key={t.tool} data-tool={t.tool}>
                  <td>{t.tool}</td>
                  <td>{t.plugin}</td>
                  <td>
                    <Verdict yes={t.visible} why={t.decided_by} />
                  </td>
                  <td>
                    <Verdict yes={t.callable} why={t.call_decided_by} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="muted">Decided by policy version {answer.policy_version}.</p>
        </>
      )}
    </section>
  );
}

export function PolicyPage() {
  const policy = useLoad(() => api.policy());
  const [text, setText] = useState<string | null>(null);
  const [problems, setProblems] = useState<PolicyProblem[]>([]);
  const [focus, setFocus] = useState<PolicyProblem | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [run, error, busy] = useAction();
  const inForce = policy.data;
  useEffect(() => {
    if (inForce) setText(inForce.policy);
  }, [inForce]);
  if (!inForce || text === null) return policy.error ? <Alert>{policy.error}</Alert> : <p class="loading">Loading…</p>;

  const save = () =>
    run(async () => {
      setSaved(null);
      try {
        const result = await api.savePolicy(text);
        setProblems([]);
        setSaved(`Saved as version ${result.version}${result.warnings.length ? ` with ${result.warnings.length} warnings` : ""}.`);
        policy.reload();
      } catch (e) {
        const found = problemsOf(e);
        setProblems(found);
        setFocus(found[0] ?? null);
        if (found.length === 0) throw e;
      }
    });

  return (
    <div class="admin-policy">
      <header class="row">
        <h2>Tool policy</h2>
        <span class="muted">
          version {inForce.version} ({inForce.source}) · {inForce.author} · {when(inForce.created_at)}
        </span>
      </header>
      {inForce.problem && <Alert>The stored policy does not load, so every tool is denied: {inForce.problem}</Alert>}
      <Editor text={text} onInput={setText} problems={problems} focus={focus} />
      <div class="row">
        <button onClick={save} disabled={busy || text === inForce.policy}>
          Save
        </button>
        <button class="secondary" onClick={() => (setText(inForce.policy), setProblems([]))} disabled={text === inForce.policy}>
          Discard changes
        </button>
        {saved && <span role="status">{saved}</span>}
      </div>
      <Alert>{error}</Alert>
      <Problems problems={problems} onPick={setFocus} />
      <div class="columns">
        <Versions current={text} inForce={inForce.version} onRestored={policy.reload} />
        <Explain policyVersion={inForce.version} />
      </div>
      <details>
        <summary>The schema policies are checked against</summary>
        <pre class="code">{inForce.schema}</pre>
      </details>
    </div>
  );
}
