// The admin area: its own tabs, shown only to admins (the server refuses members anyway).

import { ADMIN_SECTIONS, type AdminSection, follow } from "../../router";
import { AuditPage } from "./Audit";
import { ModelsPage } from "./Models";
import { PluginsPage } from "./Plugins";
import { PolicyPage } from "./Policy";
import { PromptPage } from "./Prompt";
import { TemplatesPage } from "./Templates";
import { UsersPage } from "./Users";

const TITLES: Record<AdminSection, string> = {
  policy: "Policy",
  models: "Providers and models",
  prompt: "System prompt",
  users: "Users",
  plugins: "Plugins",
  templates: "Templates",
  audit: "Audit log",
};

function Section({ section }: { section: AdminSection }) {
  switch (section) {
    case "policy":
      return <PolicyPage />;
    case "models":
      return <ModelsPage />;
    case "prompt":
      return <PromptPage />;
    case "users":
      return <UsersPage />;
    case "plugins":
      return <PluginsPage />;
    case "templates":
      return <TemplatesPage />;
    case "audit":
      return <AuditPage />;
  }
}

export default function Admin({ section }: { section: AdminSection }) {
  return (
    <main class="admin" aria-label="Administration">
      <nav class="tabs" aria-label="Administration sections">
        {ADMIN_SECTIONS.map((s) => (
          <a key={s} href={`/admin/${s}`} aria-current={s === section ? "page" : undefined} onClick={(e) => follow(e, `/admin/${s}`)}>
            {TITLES[s]}
          </a>
        ))}
      </nav>
      <div class="admin-body">
        <Section section={section} />
      </div>
    </main>
  );
}
