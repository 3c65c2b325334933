// Light, dark, or the system's: the choice is kept in this browser and applied before the
// first paint by public/theme.js, so the page never flashes the other theme.

import { useState } from "preact/hooks";

const THEME_KEY = "toolhost.theme";
const NEXT: Record<string, string> = { system: "light", light: "dark", dark: "system" };

export function ThemeSwitch() {
  const [theme, setTheme] = useState(() => localStorage.getItem(THEME_KEY) ?? "system");
  const choose = () => {
    const next = NEXT[theme] ?? "system";
    localStorage.setItem(THEME_KEY, next);
    (window as { toolhostApplyTheme?: () => void }).toolhostApplyTheme?.();
    setTheme(next);
  };
  return (
    <button class="link" onClick={choose} aria-label={`Theme: ${theme}. Switch to ${NEXT[theme]}`} title="Theme">
      {theme === "dark" ? "Dark" : theme === "light" ? "Light" : "Auto"}
    </button>
  );
}
