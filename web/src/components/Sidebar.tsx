import type { Chat, User } from "../api";
import { chatTree, chatsError, isUnread, showArchived } from "../chats";
import { follow, navigate } from "../router";
import { ThemeSwitch } from "./Theme";

function ChatLink({ chat, current, child }: { chat: Chat; current: string | null; child?: boolean }) {
  const unread = chat.id !== current && isUnread(chat);
  return (
    <li class={[child ? "child" : "", unread ? "unread" : ""].join(" ").trim() || undefined}>
      <a href={`/chats/${chat.id}`} aria-current={chat.id === current ? "page" : undefined} onClick={(e) => follow(e, `/chats/${chat.id}`)}>
        <span class={`dot ${chat.status}`} aria-label={chat.status} title={chat.status} />
        <span class="title">{chat.title}</span>
        {unread && <span class="visually-hidden">(unread)</span>}
      </a>
    </li>
  );
}

/** The user's chats (children under their parents), a new-chat button, the user's pages and signing out. */
export function Sidebar({ user, current, onSignOut }: { user: User; current: string | null; onSignOut: () => void }) {
  const tree = chatTree.value;
  return (
    <nav class="sidebar" aria-label="Chats">
      <button class="new-chat" onClick={() => navigate("/")} title="New chat (Alt+N)">
        New chat
      </button>
      {chatsError.value && <p class="error">{chatsError.value}</p>}
      <label class="archived-toggle">
        <input type="checkbox" checked={showArchived.value} onChange={(e) => (showArchived.value = e.currentTarget.checked)} />
        Archived chats
      </label>
      {tree.length === 0 ? (
        <p class="empty">{showArchived.value ? "No archived chats." : "No chats yet. Say something to start one."}</p>
      ) : (
        <ul class="chat-list">
          {tree.map(({ root, children }) => [
            <ChatLink key={root.id} chat={root} current={current} />,
            ...children.map((c) => <ChatLink key={c.id} chat={c} current={current} child />),
          ])}
        </ul>
      )}
      <ul class="pages">
        <li>
          <a href="/settings" onClick={(e) => follow(e, "/settings")}>
            Settings and tokens
          </a>
        </li>
        {user.is_admin && (
          <li>
            <a href="/admin/policy" onClick={(e) => follow(e, "/admin/policy")}>
              Administration
            </a>
          </li>
        )}
      </ul>
      <footer>
        <span>{user.name}</span>
        <ThemeSwitch />
        <button class="link" onClick={onSignOut}>
          Sign out
        </button>
      </footer>
    </nav>
  );
}
