// The signed-in user's chats for the sidebar: listed once, then kept live by the watch stream
// (GET /api/v1/chats/watch), which has no replay, so the list is read again whenever the
// stream comes back after a drop.

import { computed, signal } from "@preact/signals";
import { api, type Chat } from "./api";

export const chats = signal<Chat[]>([]);
export const chatsError = signal<string | null>(null);
/** Whether the sidebar lists archived chats instead of the others. */
export const showArchived = signal(false);

// When each chat was last seen (its `updated_at` then), kept in this browser: a chat updated
// since is unread.
const SEEN_KEY = "toolhost.seen";
function loadSeen(): Record<string, number> {
  try {
    return JSON.parse(localStorage.getItem(SEEN_KEY) ?? "{}");
  } catch {
    return {};
  }
}
export const seen = signal<Record<string, number>>(loadSeen());

/** Marks a chat read as of its latest update. */
export function markSeen(chatId: string) {
  const chat = chats.value.find((c) => c.id === chatId);
  if (!chat || seen.value[chatId] === chat.updated_at) return;
  seen.value = { ...seen.value, [chatId]: chat.updated_at };
  localStorage.setItem(SEEN_KEY, JSON.stringify(seen.value));
}

/** A chat updated since it was last seen here (never-seen chats made elsewhere count too). */
export function isUnread(chat: Chat): boolean {
  const at = seen.value[chat.id];
  return at === undefined ? chat.status === "waiting" && chat.updated_at > chat.created_at : chat.updated_at > at;
}

/** Root chats, newest activity first, each followed by its children. */
export const chatTree = computed(() => {
  const all = chats.value.filter((c) => c.archived === showArchived.value);
  const children = new Map<string, Chat[]>();
  for (const chat of all) {
    if (chat.parent_chat_id) children.set(chat.parent_chat_id, [...(children.get(chat.parent_chat_id) ?? []), chat]);
  }
  const roots = all.filter((c) => !c.parent_chat_id).sort((a, b) => b.updated_at - a.updated_at);
  return roots.map((root) => ({ root, children: children.get(root.id) ?? [] }));
});

export function upsert(chat: Chat) {
  const others = chats.value.filter((c) => c.id !== chat.id);
  chats.value = [chat, ...others];
}

async function reload() {
  try {
    const { chats: listed } = await api.chats();
    chats.value = listed;
    chatsError.value = null;
  } catch (error) {
    chatsError.value = (error as Error).message;
  }
}

let watching: EventSource | null = null;

/** Lists the chats and follows their changes until [`stopWatching`]. */
export function watchChats() {
  stopWatching();
  const source = new EventSource("/api/v1/chats/watch");
  watching = source;
  source.onopen = () => void reload();
  for (const type of ["created", "status_change", "title_change", "archived", "unarchived"]) {
    source.addEventListener(type, (event) => upsert(JSON.parse((event as MessageEvent<string>).data).chat));
  }
}

export function stopWatching() {
  watching?.close();
  watching = null;
}
