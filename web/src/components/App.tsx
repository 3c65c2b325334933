// The signed-in app: the sidebar of chats beside the chat the address names (or a new one),
// and the sign-in form when no session is open.

import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, rememberSession, type Model, type Session, type User } from "../api";
import { chatTree, stopWatching, upsert, watchChats } from "../chats";
import { type AdminSection, adminSectionOf, chatIdOf, isSettings, navigate, path } from "../router";
import { ChatView } from "./ChatView";
import { Composer } from "./Composer";
import { Settings } from "./Settings";
import { Sidebar } from "./Sidebar";
import { SignIn } from "./SignIn";

/** The models a new chat may use (usable ones), the default first chosen. */
function ModelPicker({ value, onChange }: { value: string; onChange: (model: string) => void }) {
  const [models, setModels] = useState<Model[]>([]);
  useEffect(() => {
    api.models().then(
      (listed) => setModels(listed.models.filter((m) => m.available)),
      () => setModels([]),
    );
  }, []);
  if (models.length < 2) return null;
  const chosen = value || models.find((m) => m.default)?.name || "";
  return (
    <label class="new-chat-options">
      Model
      <select aria-label="Model" value={chosen} onChange={(e) => onChange(e.currentTarget.value)}>
        {models.map((m) => (
          <option key={m.id} value={m.name}>
            {m.name}
            {m.default ? " (default)" : ""}
          </option>
        ))}
      </select>
    </label>
  );
}

function NewChat() {
  const [error, setError] = useState<string | null>(null);
  const [model, setModel] = useState("");
  return (
    <main class="chat new" aria-label="New chat">
      <div class="messages">
        <p class="empty">What should the agent do? It answers here, and the chat appears on the left.</p>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <ModelPicker value={model} onChange={setModel} />
      <Composer
        busy={false}
        placeholder="Start a chat…"
        onSend={(text) =>
          api.createChat(text, model || undefined).then(
            (chat) => {
              upsert(chat);
              navigate(`/chats/${chat.id}`);
            },
            (e) => setError((e as Error).message),
          )
        }
      />
    </main>
  );
}

type AdminScreen = ComponentType<{ section: AdminSection }>;

/** The admin screens, loaded on first use: members and chat screens never download them. */
function AdminArea({ user, section }: { user: User; section: AdminSection }) {
  const [Screen, setScreen] = useState<AdminScreen | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!user.is_admin) return;
    import("./admin/Admin").then(
      (loaded) => setScreen(() => loaded.default),
      (e) => setError(`the admin screens did not load (${(e as Error).message}); reload the page`),
    );
  }, [user.is_admin]);
  if (!user.is_admin)
    return (
      <main class="admin" aria-label="Administration">
        <p class="error" role="alert">
          Administration is for admins; ask one to make you an admin if you need it.
        </p>
      </main>
    );
  if (error) return <p class="error" role="alert">{error}</p>;
  return Screen ? <Screen section={section} /> : <p class="loading">Loading…</p>;
}

/** Alt+ArrowUp/Down: the chat above or below in the sidebar. */
function neighbourChat(current: string | null, step: number): string | null {
  const order = chatTree.value.flatMap(({ root, children }) => [root.id, ...children.map((c) => c.id)]);
  if (order.length === 0) return null;
  const at = current ? order.indexOf(current) : -1;
  const next = at < 0 ? (step > 0 ? 0 : order.length - 1) : at + step;
  return order[Math.max(0, Math.min(order.length - 1, next))];
}

export function App() {
  const [session, setSession] = useState<Session | null | "loading">("loading");
  const [problem, setProblem] = useState<string | null>(null);

  const open = (opened: Session | null) => {
    rememberSession(opened);
    setSession(opened);
  };

  useEffect(() => {
    api.session().then(open, (e) => {
      if (!(e instanceof ApiError && e.status === 401)) setProblem((e as Error).message);
      open(null);
    });
  }, []);

  useEffect(() => {
    if (session && session !== "loading") watchChats();
    return stopWatching;
  }, [session]);

  useEffect(() => {
    const keys = (e: KeyboardEvent) => {
      if (!e.altKey) return;
      if (e.key.toLowerCase() === "n") {
        e.preventDefault();
        navigate("/");
      } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        const next = neighbourChat(chatIdOf(path.value), e.key === "ArrowUp" ? -1 : 1);
        if (next) {
          e.preventDefault();
          navigate(`/chats/${next}`);
        }
      }
    };
    window.addEventListener("keydown", keys);
    return () => window.removeEventListener("keydown", keys);
  }, []);

  if (session === "loading") return <p class="loading">Loading…</p>;
  if (!session)
    return (
      <>
        {problem && <p class="error banner">{problem}</p>}
        <SignIn onSignedIn={open} />
      </>
    );
  const route = path.value;
  const chatId = chatIdOf(route);
  const section = adminSectionOf(route);
  const screen = chatId ? (
    <ChatView key={chatId} chatId={chatId} />
  ) : section ? (
    <AdminArea user={session.user} section={section} />
  ) : isSettings(route) ? (
    <Settings />
  ) : (
    <NewChat />
  );
  return (
    <div class="layout">
      <Sidebar
        user={session.user}
        current={chatId}
        onSignOut={() => api.signOut().finally(() => open(null))}
      />
      {screen}
    </div>
  );
}
