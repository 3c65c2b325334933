import type { Chat, User } from "../api";
import { chatTree, chatsError } from "../chats";
import { navigate } from "../router";

function ChatLink({ chat, current, child }: { chat: Chat; current: string | null; child?: boolean }) {
  return (
    <li class={child ? "child" : undefined}>
      <a
        href={`/chats/${chat.id}`}
        aria-current={chat.id === current ? "page" : undefined}
        onClick={(e) => {
          e.preventDefault();
          navigate(`/chats/${chat.id}`);
        }}
      >
        <span class={`dot ${chat.status}`} aria-label={chat.status} title={chat.status} />
        <span class="title">{chat.title}</span>
      </a>
    </li>
  );
}

/** The user's chats (children under their parents), a new-chat button and signing out. */
export function Sidebar({ user, current, onSignOut }: { user: User; current: string | null; onSignOut: () => void }) {
  const tree = chatTree.value;
  return (
    <nav class="sidebar" aria-label="Chats">
      <button class="new-chat" onClick={() => navigate("/")} title="New chat (Alt+N)">
        New chat
      </button>
      {chatsError.value && <p class="error">{chatsError.value}</p>}
      {tree.length === 0 ? (
        <p class="empty">No chats yet. Say something to start one.</p>
      ) : (
        <ul class="chat-list">
          {tree.map(({ root, children }) => [
            <ChatLink key={root.id} chat={root} current={current} />,
            ...children.map((c) => <ChatLink key={c.id} chat={c} current={current} child />),
          ])}
        </ul>
      )}
      <footer>
        <span>{user.name}</span>
        <button class="link" onClick={onSignOut}>
          Sign out
        </button>
      </footer>
    </nav>
  );
}
