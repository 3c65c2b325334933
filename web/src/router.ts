// The app's routes, in the address bar: `/` (a new chat) and `/chats/{id}`.

import { signal } from "@preact/signals";

export const path = signal(window.location.pathname);

window.addEventListener("popstate", () => (path.value = window.location.pathname));

export function navigate(to: string) {
  if (to === window.location.pathname) return;
  window.history.pushState(null, "", to);
  path.value = to;
}

/** The chat the address shows, if any. */
export function chatIdOf(route: string): string | null {
  const match = /^\/chats\/([^/]+)$/.exec(route);
  return match ? decodeURIComponent(match[1]) : null;
}
