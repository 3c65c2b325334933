// The audit log: calls and capability uses the policy denied, newest first, a page at a time.

import { useState } from "preact/hooks";
import { api, type Denial } from "../../api";
import { Alert, useAction, useLoad, when } from "../common";

export function AuditPage() {
  const first = useLoad(() => api.audit());
  const [older, setOlder] = useState<Denial[]>([]);
  const [next, setNext] = useState<number | undefined | null>(null);
  const [run, error, busy] = useAction();
  const denials = [...(first.data?.denials ?? []), ...older];
  const cursor = next === null ? first.data?.next_before : next;
  return (
    <div>
      <h2>Audit log</h2>
      <Alert>{first.error ?? error}</Alert>
      {first.data && denials.length === 0 && <p class="empty">Nothing denied yet.</p>}
      {denials.length > 0 && (
        <table class="grid" aria-label="Denials">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Chat</th>
              <th scope="col">Tool (plugin)</th>
              <th scope="col">Action</th>
              <th scope="col">Decided by</th>
              <th scope="col">Policy</th>
            </tr>
          </thead>
          <tbody>
            {denials.map((d) => (
              <tr key={d.id}>
                <td>{when(d.created_at)}</td>
                <td>
                  <code>{d.chat_id}</code>
                </td>
                <td>
                  {d.tool} ({d.plugin})
                </td>
                <td>
                  {d.action}
                  {d.capability && ` ${d.capability}`}
                  {d.scope && <small> {d.scope}</small>}
                </td>
                <td>{d.decided_by}</td>
                <td>v{d.policy_version}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {cursor && (
        <button
          class="secondary"
          disabled={busy}
          onClick={() =>
            run(async () => {
              const page = await api.audit(cursor);
              setOlder((shown) => [...shown, ...page.denials]);
              setNext(page.next_before);
            })
          }
        >
          Older
        </button>
      )}
    </div>
  );
}
