// Applies the theme chosen in this browser before the page paints (see components/Theme.tsx).
try {
  var theme = localStorage.getItem("toolhost.theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch (e) {
  // Storage refused: the system's theme it is.
}
