// Providers and models. A provider's key is write-only: the server seals it and only says
// whether one is set; a form to replace it never shows the old one.

import { useState } from "preact/hooks";
import { api, type Model, type Provider } from "../../api";
import { Alert, useAction, useLoad } from "../common";

function ProviderRow({ provider, onChanged }: { provider: Provider; onChanged: () => void }) {
  const [key, setKey] = useState("");
  const [run, error, busy] = useAction();
  return (
    <tr>
      <td>{provider.name}</td>
      <td>{provider.kind}</td>
      <td>{provider.base_url ?? <span class="muted">the provider's own</span>}</td>
      <td>
        {provider.available ? "usable" : <span class="error">{provider.unavailable_reason}</span>}
        <Alert>{error}</Alert>
      </td>
      <td>
        <form
          class="row"
          onSubmit={(e) => {
            e.preventDefault();
            void run(() => api.updateProvider(provider.id, { api_key: key }).then(() => (setKey(""), onChanged())));
          }}
        >
          <input
            type="password"
            autocomplete="off"
            aria-label={`New API key for ${provider.name}`}
            placeholder={provider.has_api_key ? "a key is set; type to replace" : "no key set"}
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
          />
          <button type="submit" disabled={busy || !key}>
            Set key
          </button>
          <button
            type="button"
            class="link"
            disabled={busy}
            onClick={() => confirm(`Delete provider ${provider.name}?`) && run(() => api.deleteProvider(provider.id).then(onChanged))}
          >
            Delete
          </button>
        </form>
      </td>
    </tr>
  );
}

function NewProviderForm({ onAdded }: { onAdded: () => void }) {
  const [name, setName] = useState("");
  const [kind, setKind] = useState("openai");
  const [baseUrl, setBaseUrl] = useState("");
  const [key, setKey] = useState("");
  const [run, error, busy] = useAction();
  return (
    <form
      class="row wrap"
      aria-label="Add a provider"
      onSubmit={(e) => {
        e.preventDefault();
        void run(() =>
          api
            .createProvider({ name, kind, ...(baseUrl ? { base_url: baseUrl } : {}), ...(key ? { api_key: key } : {}) })
            .then(() => (setName(""), setBaseUrl(""), setKey(""), onAdded())),
        );
      }}
    >
      <label>
        Name
        <input value={name} onInput={(e) => setName(e.currentTarget.value)} required />
      </label>
      <label>
        Kind
        <select aria-label="Kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
          <option value="openai">OpenAI-compatible</option>
          <option value="anthropic">Anthropic</option>
        </select>
      </label>
      <label>
        Base URL
        <input value={baseUrl} placeholder="optional" onInput={(e) => setBaseUrl(e.currentTarget.value)} />
      </label>
      <label>
        API key
        <input type="password" autocomplete="off" value={key} onInput={(e) => setKey(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={busy || !name}>
        Add provider
      </button>
      <Alert>{error}</Alert>
    </form>
  );
}

function ModelRow({ model, onChanged }: { model: Model; onChanged: () => void }) {
  const [run, error, busy] = useAction();
  const price = model.pricing;
  return (
    <tr>
      <td>
        {model.name}
        {model.default && <span class="badge">default</span>}
        {model.title_model && <span class="badge">titles</span>}
        {model.computer_use_model && <span class="badge">computer use</span>}
      </td>
      <td>
        {model.provider} / {model.model}
      </td>
      <td>{model.context_window.toLocaleString()}</td>
      <td>
        ${price.input} in · ${price.output} out
      </td>
      <td>
        {model.available ? "usable" : <span class="error">{model.unavailable_reason}</span>}
        <Alert>{error}</Alert>
      </td>
      <td class="row">
        {!model.default && (
          <button class="link" disabled={busy} onClick={() => run(() => api.updateModel(model.id, { default: true }).then(onChanged))}>
            Make default
          </button>
        )}
        <button
          class="link"
          disabled={busy}
          onClick={() => confirm(`Delete model ${model.name}?`) && run(() => api.deleteModel(model.id).then(onChanged))}
        >
          Delete
        </button>
      </td>
    </tr>
  );
}

function NewModelForm({ providers, onAdded }: { providers: Provider[]; onAdded: () => void }) {
  const [name, setName] = useState("");
  const [provider, setProvider] = useState("");
  const [upstream, setUpstream] = useState("");
  const [input, setInput] = useState("");
  const [output, setOutput] = useState("");
  const [run, error, busy] = useAction();
  const chosen = provider || providers[0]?.name || "";
  return (
    <form
      class="row wrap"
      aria-label="Add a model"
      onSubmit={(e) => {
        e.preventDefault();
        const pricing = input || output ? { pricing: { input: Number(input || 0), output: Number(output || 0), cache_read: 0, cache_write: 0 } } : {};
        void run(() =>
          api
            .createModel({ name, provider: chosen, ...(upstream ? { model: upstream } : {}), ...pricing })
            .then(() => (setName(""), setUpstream(""), onAdded())),
        );
      }}
    >
      <label>
        Name
        <input value={name} onInput={(e) => setName(e.currentTarget.value)} required />
      </label>
      <label>
        Provider
        <select aria-label="Provider" value={chosen} onChange={(e) => setProvider(e.currentTarget.value)}>
          {providers.map((p) => (
            <option key={p.id}>{p.name}</option>
          ))}
        </select>
      </label>
      <label>
        Provider's model id
        <input value={upstream} placeholder="the name, if the same" onInput={(e) => setUpstream(e.currentTarget.value)} />
      </label>
      <label>
        USD per million input tokens
        <input inputMode="decimal" value={input} onInput={(e) => setInput(e.currentTarget.value)} />
      </label>
      <label>
        … output tokens
        <input inputMode="decimal" value={output} onInput={(e) => setOutput(e.currentTarget.value)} />
      </label>
      <button type="submit" disabled={busy || !name || !chosen}>
        Add model
      </button>
      <Alert>{error}</Alert>
    </form>
  );
}

export function ModelsPage() {
  const providers = useLoad(() => api.providers());
  const models = useLoad(() => api.models());
  const reload = () => (providers.reload(), models.reload());
  return (
    <div class="admin-models">
      <h2>Providers</h2>
      <Alert>{providers.error}</Alert>
      <table class="grid" aria-label="Providers">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Kind</th>
            <th scope="col">Base URL</th>
            <th scope="col">State</th>
            <th scope="col">Key</th>
          </tr>
        </thead>
        <tbody>
          {providers.data?.providers.map((p) => <ProviderRow key={p.id} provider={p} onChanged={reload} />)}
        </tbody>
      </table>
      <NewProviderForm onAdded={reload} />
      <h2>Models</h2>
      <Alert>{models.error}</Alert>
      {models.data?.models.length === 0 && <p class="empty">No models yet: add a provider, then a model of it.</p>}
      <table class="grid" aria-label="Models">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Provider / model</th>
            <th scope="col">Context</th>
            <th scope="col">Price (USD / M tokens)</th>
            <th scope="col">State</th>
            <th scope="col" />
          </tr>
        </thead>
        <tbody>{models.data?.models.map((m) => <ModelRow key={m.id} model={m} onChanged={reload} />)}</tbody>
      </table>
      <NewModelForm providers={providers.data?.providers ?? []} onAdded={reload} />
    </div>
  );
}
