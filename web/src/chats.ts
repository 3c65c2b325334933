// The signed-in user's chats for the sidebar: listed once, then kept live by the watch stream
// (GET /api/v1/chats/watch), which has no replay, so the list is read again whenever the
// stream comes back after a drop.

import { computed, signal } from "@preact/signals";
import { api, type Chat } from "./api";

export const chats = signal<Chat[]>([]);
export const chatsError = signal<string | null>(null);

/** Root chats, newest activity first, each followed by its children. */
export const chatTree = computed(() => {
  const all = chats.value.filter((c) => !c.archived);
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
