// Light, dark, or the system's: the choice is kept in this browser and applied before the
// first paint by index.html, so the page never flashes the other theme.

import { useState } from "preact/hooks";

const THEME_KEY = "toolhost.theme";
const NEXT: Record<string, string> = { system: "light", light: "dark", dark: "system" };

export function ThemeSwitch() {
  const [theme, setTheme] = useState(() => localStorage.getItem(THEME_KEY) ?? "system");
  const choose = () => {
    const next = NEXT[theme] ?? "system";
    localStorage.setItem(THEME_KEY, next);
    if (next === "system") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = next;
    setTheme(next);
  };
  return (
    <button class="link" onClick={choose} aria-label={`Theme: ${theme}. Switch to ${NEXT[theme]}`} title="Theme">
      {theme === "dark" ? "Dark" : theme === "light" ? "Light" : "Auto"}
    </button>
  );
}
