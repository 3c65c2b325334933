// Sets the page's theme before it paints: the one chosen in this browser (see
// src/components/Theme.tsx), or else the system's, followed as it changes. The stylesheet
// knows only `data-theme`, so it states each theme once.
(function () {
  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  function chosen() {
    try {
      return localStorage.getItem("toolhost.theme");
    } catch (e) {
      return null; // storage refused: the system's theme
    }
  }
  function apply() {
    var theme = chosen();
    if (theme !== "light" && theme !== "dark") theme = dark.matches ? "dark" : "light";
    document.documentElement.dataset.theme = theme;
  }
  window.toolhostApplyTheme = apply;
  dark.addEventListener("change", apply);
  apply();
})();
