// Users: who can sign in, who is an admin, new users with a password, a new password (which
// signs their browsers out), and each user's API tokens, which an admin can revoke.

import { useState } from "preact/hooks";
import { api, type ListedUser } from "../../api";
import { Alert, TokenItems, useAction, useLoad } from "../common";

function UserTokens({ user, onChanged }: { user: ListedUser; onChanged: () => void }) {
  const tokens = useLoad(() => api.tokensOf(user.id), [user.id]);
  const [run, error, busy] = useAction();
  return (
    <>
      <Alert>{tokens.error ?? error}</Alert>
      {tokens.data && (
        <TokenItems
          tokens={tokens.data.tokens}
          owner={user.name}
          busy={busy}
          onRevoke={(t) => run(() => api.revokeTokenOf(user.id, t.id).then(() => (tokens.reload(), onChanged())))}
        />
      )}
    </>
  );
}

function UserRow({ user, onChanged }: { user: ListedUser; onChanged: () => void }) {
  const [password, setPassword] = useState("");
  const [open, setOpen] = useState(false);
  const [said, setSaid] = useState<string | null>(null);
  const [run, error, busy] = useAction();
  return (
    <>
      <tr>
        <td>{user.name}</td>
        <td>{user.is_admin ? "admin" : "member"}</td>
        <td>{user.has_password ? "yes" : <span class="muted">no password</span>}</td>
        <td>
          <button class="link" aria-expanded={open} onClick={() => setOpen(!open)}>
            {user.tokens} {user.tokens === 1 ? "token" : "tokens"}
          </button>
        </td>
        <td>
          <form
            class="row"
            onSubmit={(e) => {
              e.preventDefault();
              void run(() =>
                api.updateUser(user.id, { password }).then(() => {
                  setPassword("");
                  setSaid("New password set; their browsers were signed out.");
                  onChanged();
                }),
              );
            }}
          >
            <input
              type="password"
              autocomplete="new-password"
              aria-label={`New password for ${user.name}`}
              placeholder="new password"
              value={password}
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
            <button type="submit" class="secondary" disabled={busy || password.length === 0}>
              Set
            </button>
            <button
              type="button"
              class="link"
              disabled={busy}
              onClick={() => run(() => api.updateUser(user.id, { admin: !user.is_admin }).then(onChanged))}
            >
              {user.is_admin ? "Make member" : "Make admin"}
            </button>
          </form>
          {said && <span role="status">{said}</span>}
          <Alert>{error}</Alert>
        </td>
      </tr>
      {open && (
        <tr>
          <td colSpan={5}>
            <UserTokens user={user} onChanged={onChanged} />
          </td>
        </tr>
      )}
    </>
  );
}

function NewUserForm({ onAdded }: { onAdded: () => void }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [admin, setAdmin] = useState(false);
  const [run, error, busy] = useAction();
  return (
    <form
      class="row wrap"
      aria-label="Add a user"
      onSubmit={(e) => {
        e.preventDefault();
        void run(() =>
          api
            .createUser({ name, admin, ...(password ? { password } : {}) })
            .then(() => (setName(""), setPassword(""), setAdmin(false), onAdded())),
        );
      }}
    >
      <label>
        Name
        <input value={name} autocomplete="off" onInput={(e) => setName(e.currentTarget.value)} required />
      </label>
      <label>
        Password
        <input type="password" autocomplete="new-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
      </label>
      <label class="row">
        <input type="checkbox" checked={admin} onChange={(e) => setAdmin(e.currentTarget.checked)} style={{ width: "auto" }} />
        Admin
      </label>
      <button type="submit" disabled={busy || !name}>
        Add user
      </button>
      <Alert>{error}</Alert>
    </form>
  );
}

export function UsersPage() {
  const users = useLoad(() => api.users());
  return (
    <div>
      <h2>Users</h2>
      <Alert>{users.error}</Alert>
      <table class="grid" aria-label="Users">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Role</th>
            <th scope="col">Signs in</th>
            <th scope="col">API tokens</th>
            <th scope="col">Password and role</th>
          </tr>
        </thead>
        <tbody>{users.data?.users.map((u) => <UserRow key={u.id} user={u} onChanged={users.reload} />)}</tbody>
      </table>
      <NewUserForm onAdded={users.reload} />
    </div>
  );
}
