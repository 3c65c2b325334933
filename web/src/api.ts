// The server's HTTP API as the app uses it: JSON in and out, the session cookie sent by the
// browser, the session's CSRF token on every request that changes something, and every error
// in the API's one shape turned into an ApiError whose message is the server's.

export interface User {
  id: string;
  name: string;
  is_admin: boolean;
}

export interface Session {
  user: User;
  csrf_token: string;
  expires_at: number;
}

export type ChatStatus = "waiting" | "pending" | "running" | "error";

export interface Chat {
  id: string;
  title: string;
  status: ChatStatus;
  kind: string;
  parent_chat_id: string | null;
  root_chat_id: string;
  workspace_id: string | null;
  model: string | null;
  archived: boolean;
  last_error: string | null;
  created_at: number;
  updated_at: number;
}

export type MessagePart =
  | { type: "text"; text: string }
  | { type: "reasoning"; text: string }
  | { type: "tool-call"; tool_call_id: string; tool_name: string; args: unknown }
  | {
      type: "tool-result";
      tool_call_id: string;
      tool_name: string;
      result: unknown;
      is_error: boolean;
      images?: { media_type: string; data: string }[];
    }
  | { type: "file-reference"; file_name: string; start_line: number; end_line: number; content: string }
  | { type: "image"; media_type: string; data: string }
  | { type: "compaction"; through_seq: number; messages_compacted: number };

export interface Message {
  id: number;
  chat_id: string;
  seq: number;
  role: "user" | "assistant" | "tool" | "system";
  content: MessagePart[];
  model: string | null;
  usage?: { input_tokens: number; output_tokens: number; cost_usd?: number | null };
  created_at: number;
}

export interface QueuedMessage {
  id: number;
  chat_id: string;
  content: MessagePart[];
  created_at: number;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = "";

/** Remembers the session's CSRF token, sent with every request that changes something. */
export function rememberSession(session: Session | null) {
  csrfToken = session?.csrf_token ?? "";
}

export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["x-csrf-token"] = csrfToken;
  let response: Response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "offline", "the server cannot be reached; check the connection and try again");
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: said below.
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(
      response.status,
      error?.code ?? "http_error",
      error?.message ?? `the server answered ${response.status} ${response.statusText}`,
    );
  }
  return json as T;
}

export const api = {
  session: () => request<Session>("GET", "/auth/session"),
  signIn: (name: string, password: string) => request<Session>("POST", "/auth/sign-in", { name, password }),
  signOut: () => request<void>("POST", "/auth/sign-out"),
  chats: () => request<{ chats: Chat[] }>("GET", "/chats?limit=200"),
  chat: (id: string) => request<Chat>("GET", `/chats/${id}`),
  createChat: (text: string) => request<Chat>("POST", "/chats", { content: [{ type: "text", text }] }),
  send: (id: string, text: string) =>
    request<{ queued: boolean }>("POST", `/chats/${id}/messages`, { content: [{ type: "text", text }] }),
  interrupt: (id: string) => request<Chat>("POST", `/chats/${id}/interrupt`),
  edit: (id: string, messageId: number, text: string) =>
    request<unknown>("PATCH", `/chats/${id}/messages/${messageId}`, { content: [{ type: "text", text }] }),
  deleteQueued: (id: string, queuedId: number) => request<void>("DELETE", `/chats/${id}/queue/${queuedId}`),
  promoteQueued: (id: string, queuedId: number) => request<unknown>("POST", `/chats/${id}/queue/${queuedId}/promote`),
};
