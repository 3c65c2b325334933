import { useState } from "preact/hooks";

/**
 * Where a message is written. Enter sends (Shift+Enter is a new line); while a turn runs, a
 * message sent is queued, and Escape (or the button) interrupts.
 */
export function Composer({
  busy,
  onSend,
  onInterrupt,
  placeholder,
}: {
  busy: boolean;
  onSend: (text: string) => Promise<unknown>;
  onInterrupt?: () => void;
  placeholder?: string;
}) {
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);

  async function send() {
    const message = text.trim();
    if (!message || sending) return;
    setSending(true);
    try {
      await onSend(message);
      // Only what was sent goes: text typed while it was on its way stays.
      setText((current) => (current.trim() === message ? "" : current));
    } finally {
      setSending(false);
    }
  }

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        void send();
      }}
    >
      <textarea
        aria-label="Message"
        placeholder={placeholder ?? (busy ? "Queue a message…" : "Send a message…")}
        value={text}
        rows={3}
        autofocus
        onInput={(e) => setText(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            void send();
          } else if (e.key === "Escape" && busy && onInterrupt) {
            e.preventDefault();
            onInterrupt();
          }
        }}
      />
      <div class="actions">
        {busy && onInterrupt && (
          <button type="button" class="secondary" onClick={onInterrupt} title="Interrupt (Escape)">
            Interrupt
          </button>
        )}
        <button type="submit" disabled={sending || !text.trim()}>
          {busy ? "Queue" : "Send"}
        </button>
      </div>
    </form>
  );
}
