// The git changes of a chat (GET /api/v1/chats/{id}/git/watch, a WebSocket): the server sends a
// snapshot when it changes; this reconnects after a drop and asks for a fresh one on demand.

import { signal } from "@preact/signals";

export interface ChangedFile {
  path: string;
  status: string;
}

export interface Repository {
  path: string;
  branch: string | null;
  remote: string | null;
  changed_files: ChangedFile[];
  diff: string;
  diff_truncated: boolean;
}

export interface GitSnapshot {
  workspace_id: string | null;
  repositories: Repository[];
  error?: string;
}

export class GitWatch {
  readonly snapshot = signal<GitSnapshot | null>(null);
  readonly connected = signal(false);
  private socket: WebSocket | null = null;
  private closed = false;
  private retry = 500;

  constructor(private readonly chatId: string) {
    this.open();
  }

  private open() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/api/v1/chats/${encodeURIComponent(this.chatId)}/git/watch`);
    this.socket = socket;
    socket.onopen = () => {
      this.connected.value = true;
      this.retry = 500;
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      if (message.type === "snapshot") this.snapshot.value = message.snapshot;
      else if (message.type === "error") this.snapshot.value = { workspace_id: null, repositories: [], error: message.message };
    };
    socket.onclose = () => {
      this.connected.value = false;
      if (this.closed) return;
      setTimeout(() => !this.closed && this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 10_000);
    };
  }

  refresh() {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send("refresh");
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}

/** A unified diff cut into its files, each with its lines. */
export function filesOf(diff: string): { name: string; lines: string[] }[] {
  const files: { name: string; lines: string[] }[] = [];
  for (const line of diff.split("\n")) {
    const header = /^diff --git a\/(.+) b\/(.+)$/.exec(line);
    if (header) files.push({ name: header[2], lines: [] });
    else if (files.length > 0) files[files.length - 1].lines.push(line);
    else if (line) files.push({ name: "", lines: [line] });
  }
  return files;
}
