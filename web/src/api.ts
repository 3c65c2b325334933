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

/** A tool call waiting for the chat owner's approval (the tool policy's require_approval). */
export interface ToolApproval {
  id: string;
  chat_id: string;
  root_chat_id: string;
  tool_call_id: string;
  tool: string;
  arguments: unknown;
  /** The rules that asked. */
  rule: string;
  status: "pending" | "approved" | "denied" | "expired" | "cancelled";
  scope: "once" | "chat" | null;
  reason: string | null;
  created_at: number;
  deadline_at: number;
}

export type ApprovalDecision = "approve_once" | "approve_for_chat" | "deny";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** What the error's `details` say, e.g. a refused policy's `problems`. */
    readonly details?: Record<string, unknown>,
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
    const error = (json as { error?: { code?: string; message?: string; details?: Record<string, unknown> } } | undefined)
      ?.error;
    throw new ApiError(
      response.status,
      error?.code ?? "http_error",
      error?.message ?? `the server answered ${response.status} ${response.statusText}`,
      error?.details,
    );
  }
  return json as T;
}

export interface Pricing {
  input: number;
  output: number;
  cache_read: number;
  cache_write: number;
}

export interface Model {
  id: string;
  name: string;
  provider: string;
  model: string;
  context_window: number;
  max_output_tokens: number | null;
  thinking_budget_tokens: number | null;
  compaction_threshold: number;
  pricing: Pricing;
  default: boolean;
  title_model: boolean;
  computer_use_model: boolean;
  source: string;
  available: boolean;
  unavailable_reason?: string;
}

export interface Provider {
  id: string;
  name: string;
  kind: "openai" | "anthropic";
  base_url: string | null;
  has_api_key: boolean;
  source: string;
  available: boolean;
  unavailable_reason?: string;
}

export interface PolicyView {
  policy: string;
  version: number;
  author: string;
  created_at: number;
  source: "default" | "custom";
  schema: string;
  problem?: string;
}

export interface PolicyProblem {
  line: number;
  column: number;
  message: string;
  rule?: string | null;
}

export interface PolicyVersion {
  version: number;
  author: string;
  note: string;
  created_at: number;
}

export interface ToolVerdict {
  tool: string;
  plugin: string;
  visible: boolean;
  decided_by: string;
  callable: boolean;
  call_decided_by: string;
}

export interface CapabilityVerdict {
  tool: string;
  plugin: string;
  capability: string;
  allowed: boolean;
  decided_by: string;
}

export interface Explanation {
  policy_version: number;
  tools: ToolVerdict[];
  capabilities: CapabilityVerdict[];
}

export type ExplainRequest =
  | { chat_id: string }
  | { kind: string; depth?: number; owner?: string; owner_role?: string; model?: string };

export interface Denial {
  id: number;
  chat_id: string;
  tool: string;
  plugin: string;
  action: string;
  capability: string | null;
  scope: string | null;
  decided_by: string;
  policy_version: number;
  created_at: number;
}

export interface Template {
  id: string;
  name: string;
  description: string;
  network: boolean;
  admins_only: boolean;
}

export interface Workspace {
  id: string;
  name: string;
  template_id: string;
  status: "created" | "starting" | "ready" | "start_error" | "start_timeout" | "stopped";
  detail: string | null;
  updated_at: number;
}

export interface Token {
  id: string;
  label: string;
  created_at: number;
}

export interface ListedUser {
  id: string;
  name: string;
  is_admin: boolean;
  has_password: boolean;
  tokens: number;
  created_at: number;
}

const id = encodeURIComponent;

export const api = {
  session: () => request<Session>("GET", "/auth/session"),
  signIn: (name: string, password: string) => request<Session>("POST", "/auth/sign-in", { name, password }),
  signOut: () => request<void>("POST", "/auth/sign-out"),
  chats: () => request<{ chats: Chat[] }>("GET", "/chats?limit=200"),
  chat: (id: string) => request<Chat>("GET", `/chats/${id}`),
  createChat: (text: string, model?: string) =>
    request<Chat>("POST", "/chats", { content: [{ type: "text", text }], ...(model ? { model } : {}) }),
  send: (id: string, text: string) =>
    request<{ queued: boolean }>("POST", `/chats/${id}/messages`, { content: [{ type: "text", text }] }),
  interrupt: (id: string) => request<Chat>("POST", `/chats/${id}/interrupt`),
  answerApproval: (id: string, approvalId: string, decision: ApprovalDecision, reason?: string) =>
    request<ToolApproval>("POST", `/chats/${id}/approvals/${encodeURIComponent(approvalId)}`, { decision, reason }),
  edit: (id: string, messageId: number, text: string) =>
    request<unknown>("PATCH", `/chats/${id}/messages/${messageId}`, { content: [{ type: "text", text }] }),
  deleteQueued: (id: string, queuedId: number) => request<void>("DELETE", `/chats/${id}/queue/${queuedId}`),
  promoteQueued: (id: string, queuedId: number) => request<unknown>("POST", `/chats/${id}/queue/${queuedId}/promote`),
  messages: (chatId: string) =>
    request<{ messages: Message[]; queued_messages: QueuedMessage[] }>("GET", `/chats/${id(chatId)}/messages`),
  archive: (chatId: string) => request<unknown>("POST", `/chats/${id(chatId)}/archive`),
  unarchive: (chatId: string) => request<unknown>("POST", `/chats/${id(chatId)}/unarchive`),

  models: () => request<{ default_model: string | null; models: Model[] }>("GET", "/models"),
  createModel: (model: Record<string, unknown>) => request<Model>("POST", "/models", model),
  updateModel: (modelId: string, patch: Record<string, unknown>) => request<Model>("PATCH", `/models/${id(modelId)}`, patch),
  deleteModel: (modelId: string) => request<void>("DELETE", `/models/${id(modelId)}`),
  providers: () => request<{ providers: Provider[] }>("GET", "/providers"),
  createProvider: (provider: Record<string, unknown>) => request<Provider>("POST", "/providers", provider),
  updateProvider: (providerId: string, patch: Record<string, unknown>) =>
    request<Provider>("PATCH", `/providers/${id(providerId)}`, patch),
  deleteProvider: (providerId: string) => request<void>("DELETE", `/providers/${id(providerId)}`),

  systemPrompt: () => request<{ prompt: string | null }>("GET", "/settings/system-prompt"),
  setSystemPrompt: (prompt: string | null) => request<unknown>("PUT", "/settings/system-prompt", { prompt }),
  myPrompt: () => request<{ prompt: string | null }>("GET", "/users/me/prompt"),
  setMyPrompt: (prompt: string | null) => request<unknown>("PUT", "/users/me/prompt", { prompt }),

  policy: () => request<PolicyView>("GET", "/policy"),
  savePolicy: (policy: string) => request<{ version: number; warnings: unknown[] }>("PUT", "/policy", { policy }),
  policyVersions: () => request<{ versions: PolicyVersion[] }>("GET", "/policy/versions"),
  policyVersion: (version: number) => request<PolicyVersion & { policy: string }>("GET", `/policy/versions/${version}`),
  restorePolicy: (version: number) => request<{ version: number }>("POST", `/policy/versions/${version}/restore`),
  explain: (whom: ExplainRequest) => request<Explanation>("POST", "/policy/explain", whom),
  audit: (before?: number) =>
    request<{ denials: Denial[]; next_before?: number }>("GET", `/policy/audit?limit=100${before ? `&before=${before}` : ""}`),

  templates: () =>
    request<{ templates: Template[]; problems: { id: string; source: string; problem: string }[] }>("GET", "/templates"),
  reloadTemplates: () => request<unknown>("POST", "/templates/reload"),
  workspace: (workspaceId: string) => request<Workspace>("GET", `/workspaces/${id(workspaceId)}`),
  startWorkspace: (workspaceId: string) => request<Workspace>("POST", `/workspaces/${id(workspaceId)}/start`),
  stopWorkspace: (workspaceId: string) => request<Workspace>("POST", `/workspaces/${id(workspaceId)}/stop`),

  users: () => request<{ users: ListedUser[] }>("GET", "/users"),
  createUser: (user: { name: string; admin: boolean; password?: string }) => request<User>("POST", "/users", user),
  updateUser: (userId: string, patch: { admin?: boolean; password?: string }) => request<User>("PATCH", `/users/${id(userId)}`, patch),
  tokensOf: (userId: string) => request<{ tokens: Token[] }>("GET", `/users/${id(userId)}/tokens`),
  revokeTokenOf: (userId: string, tokenId: string) => request<void>("DELETE", `/users/${id(userId)}/tokens/${id(tokenId)}`),

  tokens: () => request<{ tokens: Token[] }>("GET", "/users/me/tokens"),
  createToken: (label: string) => request<Token & { token: string }>("POST", "/users/me/tokens", { label }),
  revokeToken: (tokenId: string) => request<void>("DELETE", `/users/me/tokens/${id(tokenId)}`),
};
