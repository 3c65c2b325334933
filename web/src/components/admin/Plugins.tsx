// Plugins as the policy sees them: each plugin's tools, which kinds of chat see and call
// them, and the capabilities (imports) each tool may use. It is explain asked for a member's
// chat of each kind, grouped by plugin.

import { api, type Explanation } from "../../api";
import { Alert, Verdict, useLoad } from "../common";

const KINDS = ["root", "subagent", "computer-use", "mcp"] as const;

export function PluginsPage() {
  const verdicts = useLoad(() =>
    Promise.all(KINDS.map((kind) => api.explain({ kind, owner_role: "member" }))).then(
      (answers) => new Map(KINDS.map((kind, i) => [kind, answers[i]] as [string, Explanation])),
    ),
  );
  const root = verdicts.data?.get("root");
  const plugins = new Map<string, string[]>();
  for (const t of root?.tools ?? []) plugins.set(t.plugin, [...(plugins.get(t.plugin) ?? []), t.tool]);
  return (
    <div>
      <h2>Plugins</h2>
      <p class="muted">What a member's chat of each kind may do, under policy version {root?.policy_version ?? "…"}.</p>
      <Alert>{verdicts.error}</Alert>
      {[...plugins].map(([plugin, tools]) => (
        <section key={plugin} class="plugin" aria-label={`plugin ${plugin}`}>
          <h3>{plugin}</h3>
          <table class="grid">
            <thead>
              <tr>
                <th scope="col">Tool</th>
                {KINDS.map((k) => (
                  <th key={k} scope="col">
                    {k} chats
                  </th>
                ))}
                <th scope="col">Capabilities (root chats)</th>
              </tr>
            </thead>
            <tbody>
              {tools.map((tool) => (
                <tr key={tool}>
                  <td>{tool}</td>
                  {KINDS.map((k) => {
                    const verdict = verdicts.data?.get(k)?.tools.find((t) => t.tool === tool);
                    return <td key={k}>{verdict && <Verdict yes={verdict.callable} why={verdict.call_decided_by} />}</td>;
                  })}
                  <td>
                    {root?.capabilities
                      .filter((c) => c.tool === tool)
                      .map((c) => (
                        <div key={c.capability}>
                          {c.capability}: <Verdict yes={c.allowed} why={c.decided_by} />
                        </div>
                      ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </div>
  );
}
