// The signed-in app: the sidebar of chats beside the chat the address names (or a new one),
// and the sign-in form when no session is open.

import { useEffect, useState } from "preact/hooks";
import { ApiError, api, rememberSession, type Session } from "../api";
import { stopWatching, upsert, watchChats } from "../chats";
import { chatIdOf, navigate, path } from "../router";
import { ChatView } from "./ChatView";
import { Composer } from "./Composer";
import { Sidebar } from "./Sidebar";
import { SignIn } from "./SignIn";

function NewChat() {
  const [error, setError] = useState<string | null>(null);
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
      <Composer
        busy={false}
        placeholder="Start a chat…"
        onSend={(text) =>
          api.createChat(text).then(
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
      if (e.altKey && e.key.toLowerCase() === "n") {
        e.preventDefault();
        navigate("/");
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
  const chatId = chatIdOf(path.value);
  return (
    <div class="layout">
      <Sidebar
        user={session.user}
        current={chatId}
        onSignOut={() => api.signOut().finally(() => open(null))}
      />
      {chatId ? <ChatView key={chatId} chatId={chatId} /> : <NewChat />}
    </div>
  );
}
