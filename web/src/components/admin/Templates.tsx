// Templates workspaces are made from, and those refused with their problems.

import { api } from "../../api";
import { Alert, useAction, useLoad } from "../common";

export function TemplatesPage() {
  const templates = useLoad(() => api.templates());
  const [run, error, busy] = useAction();
  return (
    <div>
      <header class="row">
        <h2>Templates</h2>
        <button class="secondary" disabled={busy} onClick={() => run(() => api.reloadTemplates().then(templates.reload))}>
          Reload from disk
        </button>
      </header>
      <Alert>{templates.error ?? error}</Alert>
      {templates.data && (
        <>
          <table class="grid" aria-label="Templates">
            <thead>
              <tr>
                <th scope="col">Id</th>
                <th scope="col">Name</th>
                <th scope="col">Description</th>
                <th scope="col">Network</th>
                <th scope="col">Who</th>
              </tr>
            </thead>
            <tbody>
              {templates.data.templates.map((t) => (
                <tr key={t.id}>
                  <td>
                    <code>{t.id}</code>
                  </td>
                  <td>{t.name}</td>
                  <td>{t.description}</td>
                  <td>{t.network ? "yes" : "no"}</td>
                  <td>{t.admins_only ? "admins" : "everyone"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h3>Refused</h3>
          {templates.data.problems.length === 0 ? (
            <p class="empty">Every template on disk loaded.</p>
          ) : (
            <ul class="problems" aria-label="Template problems">
              {templates.data.problems.map((p) => (
                <li key={p.id}>
                  <code>{p.id}</code> ({p.source}): {p.problem}
                </li>
              ))}
            </ul>
          )}
        </>
      )}
    </div>
  );
}
