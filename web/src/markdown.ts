// Markdown as the model writes it, turned into HTML that is safe to show: whatever the model
// (or a tool's output it quotes) writes, no script, handler or foreign frame survives.

import DOMPurify from "dompurify";
import { marked } from "marked";

marked.setOptions({ gfm: true, breaks: false });

export function markdownToHtml(text: string): string {
  const html = marked.parse(text, { async: false });
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
}
