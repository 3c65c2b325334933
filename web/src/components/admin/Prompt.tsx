// The deployment's system prompt (admins); every chat's turns start with it.

import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { Alert, useAction, useLoad } from "../common";

/** An editor of one prompt: `load` and `save` say whose. */
export function PromptEditor({
  label,
  load,
  save,
}: {
  label: string;
  load: () => Promise<{ prompt: string | null }>;
  save: (prompt: string | null) => Promise<unknown>;
}) {
  const loaded = useLoad(load);
  const [text, setText] = useState("");
  const [run, error, busy] = useAction();
  const [said, setSaid] = useState<string | null>(null);
  useEffect(() => setText(loaded.data?.prompt ?? ""), [loaded.data]);
  const store = (prompt: string | null) =>
    run(() => save(prompt).then(() => (setSaid(prompt === null ? "Removed." : "Saved."), loaded.reload())));
  return (
    <form
      class="prompt-editor"
      onSubmit={(e) => {
        e.preventDefault();
        void store(text.trim() ? text : null);
      }}
    >
      <label>
        {label}
        <textarea rows={12} value={text} onInput={(e) => (setText(e.currentTarget.value), setSaid(null))} />
      </label>
      <div class="row">
        <button type="submit" disabled={busy}>
          Save
        </button>
        <button type="button" class="secondary" disabled={busy || loaded.data?.prompt == null} onClick={() => store(null)}>
          Remove
        </button>
        {said && <span role="status">{said}</span>}
      </div>
      <Alert>{loaded.error ?? error}</Alert>
    </form>
  );
}

export function PromptPage() {
  return (
    <div>
      <h2>System prompt</h2>
      <p class="muted">Every chat of every user starts with this, before the user's own prompt.</p>
      <PromptEditor label="System prompt" load={api.systemPrompt} save={api.setSystemPrompt} />
    </div>
  );
}
