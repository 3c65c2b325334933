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

export const ADMIN_SECTIONS = ["policy", "models", "prompt", "users", "plugins", "templates", "audit"] as const;
export type AdminSection = (typeof ADMIN_SECTIONS)[number];

/** The admin page the address shows (`/admin` is the policy), if any. */
export function adminSectionOf(route: string): AdminSection | null {
  const match = /^\/admin(?:\/([a-z]+))?\/?$/.exec(route);
  if (!match) return null;
  const section = (match[1] ?? "policy") as AdminSection;
  return ADMIN_SECTIONS.includes(section) ? section : null;
}

/** Whether the address is the user's own settings (tokens, prompt). */
export function isSettings(route: string): boolean {
  return /^\/settings\/?$/.test(route);
}

/** A link's click that the app follows itself, keeping the page (modifier clicks open tabs). */
export function follow(e: MouseEvent, to: string) {
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(to);
}
