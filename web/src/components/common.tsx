// Small pieces every screen uses: loading what a screen shows (with its error), running an
// action (with its error), and showing an error as the server said it.

import type { ComponentChildren } from "preact";
import type { Token } from "../api";
import { useCallback, useEffect, useState } from "preact/hooks";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

/** Loads `load()` when the component mounts (and when `reload` is called). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [round, setRound] = useState(0);
  useEffect(() => {
    let current = true;
    load().then(
      (loaded) => {
        if (!current) return;
        setData(loaded);
        setError(null);
      },
      (e) => current && setError((e as Error).message),
    );
    return () => {
      current = false;
    };
  }, [round, ...deps]);
  return { data, error, reload: useCallback(() => setRound((r) => r + 1), []) };
}

/** Runs actions one at a time, keeping the last one's error until the next succeeds. */
export function useAction(): [(work: () => Promise<unknown>) => Promise<boolean>, string | null, boolean] {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const run = useCallback(async (work: () => Promise<unknown>) => {
    setBusy(true);
    try {
      await work();
      setError(null);
      return true;
    } catch (e) {
      setError((e as Error).message);
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return [run, error, busy];
}

export function Alert({ children }: { children: ComponentChildren }) {
  if (!children) return null;
  return (
    <p class="error" role="alert">
      {children}
    </p>
  );
}

export function when(millis: number): string {
  if (!millis) return "built in";
  return new Date(millis).toLocaleString();
}

/** A yes/no cell that says why, readable without colour. */
export function Verdict({ yes, why }: { yes: boolean; why: string }) {
  return (
    <span class={`verdict ${yes ? "yes" : "no"}`} title={why}>
      {yes ? "yes" : "no"} <small>{why}</small>
    </span>
  );
}

/** API tokens as listed (never the tokens themselves), each with a Revoke button. */
export function TokenItems({
  tokens,
  owner,
  busy,
  onRevoke,
}: {
  tokens: Token[];
  /** Whose tokens, for the buttons' labels (absent: the caller's own). */
  owner?: string;
  busy: boolean;
  onRevoke: (token: Token) => void;
}) {
  if (tokens.length === 0) return <p class="empty">No tokens.</p>;
  return (
    <ul class="tokens">
      {tokens.map((t) => (
        <li key={t.id}>
          <span>{t.label}</span> <small class="muted">made {when(t.created_at)}</small>
          <button
            class="link"
            aria-label={owner ? `Revoke ${owner}'s token ${t.label}` : `Revoke ${t.label}`}
            disabled={busy}
            onClick={() => onRevoke(t)}
          >
            Revoke
          </button>
        </li>
      ))}
    </ul>
  );
}
