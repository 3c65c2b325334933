// page-title: a Toolhost tool plugin in JavaScript. It fetches a web page (outbound HTTP, which
// an admin grants per origin) and returns its <title>.
//
// Build: npm install && npm run build  (componentize-js makes page_title.wasm)

import { log } from "toolhost:plugin/log@0.1.0";

const schema = {
  type: "object",
  properties: { url: { type: "string", description: "The page's http(s) URL." } },
  required: ["url"],
  additionalProperties: false,
};

// The `tools` interface: `describe` says what the plugin offers, `invoke` runs one call.
export const tools = {
  describe() {
    return {
      name: "page-title",
      version: "0.1.0",
      summary: "Reads the title of a web page",
      tools: [
        {
          name: "page_title",
          description: "Fetches a web page and returns its title.",
          inputSchema: JSON.stringify(schema),
          annotations: { readOnly: true, destructive: false, idempotent: true, openWorld: true },
        },
      ],
    };
  },

  // Arguments arrive as JSON text, already checked against the schema by the host. A thrown
  // `{tag, val}` is a `tool-error` (invalid-arguments, denied, not-found or failed): the model
  // reads `val`, so say what to do about it.
  async invoke(ctx, tool, argumentsJson) {
    if (tool !== "page_title") {
      throw { tag: "not-found", val: `this plugin has no tool ${tool}` };
    }
    const { url } = JSON.parse(argumentsJson);
    log("info", `fetching ${url} for chat ${ctx.chatId}`);
    let response;
    try {
      response = await fetch(url);
    } catch (error) {
      // A refusal by the host's policy arrives here too, with its reason.
      throw { tag: "failed", val: `cannot fetch ${url}: ${error}` };
    }
    const page = await response.text();
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(page);
    if (!title) {
      return { content: [{ tag: "text", val: `${url} has no title (HTTP ${response.status})` }], isError: true };
    }
    return { content: [{ tag: "text", val: title[1].trim() }], isError: false };
  },
};
