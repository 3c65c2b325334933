// The user's own settings: API tokens for scripts (each shown once, when made) and the prompt
// added to every chat of theirs.

import { useState } from "preact/hooks";
import { api } from "../api";
import { PromptEditor } from "./admin/Prompt";
import { Alert, TokenItems, useAction, useLoad } from "./common";

function Tokens() {
  const tokens = useLoad(() => api.tokens());
  const [label, setLabel] = useState("");
  const [made, setMade] = useState<string | null>(null);
  const [run, error, busy] = useAction();
  return (
    <section aria-label="API tokens">
      <h2>API tokens</h2>
      <p class="muted">A token lets a script use the API as you (`Authorization: Bearer …`).</p>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            const token = await api.createToken(label);
            setMade(token.token);
            setLabel("");
            tokens.reload();
          });
        }}
      >
        <label>
          What it is for
          <input value={label} maxLength={100} onInput={(e) => setLabel(e.currentTarget.value)} />
        </label>
        <button type="submit" disabled={busy || !label.trim()}>
          Create token
        </button>
      </form>
      {made && (
        <p class="made-token" role="status">
          Your new token, shown this once: <code>{made}</code>
        </p>
      )}
      <Alert>{tokens.error ?? error}</Alert>
      {tokens.data && (
        <TokenItems tokens={tokens.data.tokens} busy={busy} onRevoke={(t) => run(() => api.revokeToken(t.id).then(tokens.reload))} />
      )}
    </section>
  );
}

export function Settings() {
  return (
    <main class="settings" aria-label="Settings">
      <Tokens />
      <section aria-label="Your prompt">
        <h2>Your prompt</h2>
        <PromptEditor label="Added to every chat of yours" load={api.myPrompt} save={api.setMyPrompt} />
      </section>
    </main>
  );
}
