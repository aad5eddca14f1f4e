// The admin page: reads /health and the admin API with the admin key kept in this tab's
// sessionStorage. Everything shown is built with textContent, never parsed as HTML: key names,
// account names and upstream error messages are other people's input.
"use strict";

const KEY_SLOT = "chatbridge-admin-key";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let timer = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "className") node.className = value;
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function cells(row, values) {
  for (const value of values) row.append(value instanceof Node && (value.tagName === "TD" || value.tagName === "TH") ? value : el("td", {}, value));
  return row;
}

function num(value) {
  return el("td", { className: "num" }, value === null || value === undefined ? "–" : Number(value).toLocaleString("en"));
}

function when(seconds) {
  if (!seconds) return "–";
  return new Date(seconds * 1000).toISOString().replace(".000", "").replace("T", " ");
}

function notice(text, isError) {
  const box = $("notice");
  box.textContent = text || "";
  box.className = isError ? "error" : "muted";
}

class Refused extends Error {}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY_SLOT) } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON: the status says enough */ }
  const message = (data && (data.message || (data.error && data.error.message))) || "HTTP " + response.status;
  if (response.status === 401) {
    signOut(message);
    throw new Refused(message);
  }
  if (!response.ok) throw new Error(message);
  return data;
}

// -- sign in and out ------------------------------------------------------------------------------

function signOut(reason) {
  sessionStorage.removeItem(KEY_SLOT);
  clearInterval(timer);
  timer = null;
  $("console").hidden = true;
  for (const id of ["signout", "refresh"]) $(id).hidden = true;
  document.querySelector("label.auto").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = reason || "";
  $("admin-key").value = "";
}

async function signIn(key) {
  sessionStorage.setItem(KEY_SLOT, key);
  try {
    await api("GET", "/admin/keys");
  } catch (error) {
    if (!(error instanceof Refused)) signOut(error.message);
    return;
  }
  $("signin").hidden = true;
  $("console").hidden = false;
  for (const id of ["signout", "refresh"]) $(id).hidden = false;
  document.querySelector("label.auto").hidden = false;
  await refresh();
  schedule();
}

function schedule() {
  clearInterval(timer);
  timer = $("auto").checked ? setInterval(refresh, REFRESH_MS) : null;
}

// -- what is shown --------------------------------------------------------------------------------

async function refresh() {
  try {
    const [health, pools, keys, usage] = await Promise.all([
      fetch("/health").then((r) => r.json()),
      api("GET", "/admin/pools"),
      api("GET", "/admin/keys"),
      api("GET", "/admin/usage"),
    ]);
    showHealth(health);
    showPools(pools.data.providers);
    showKeys(keys.data);
    showUsage(usage.data);
  } catch (error) {
    if (!(error instanceof Refused)) notice("Could not read the gateway: " + error.message, true);
  }
}

function showHealth(health) {
  $("version").textContent = health.version ? "v" + health.version : "";
  const status = $("status");
  status.textContent = health.status;
  status.className = "badge " + health.status;
  const body = $("providers").tBodies[0];
  body.replaceChildren();
  for (const [name, p] of Object.entries(health.providers || {})) {
    const c = p.credentials;
    const counts = c ? `${c.active} of ${c.total} active` + (c.cooling ? `, ${c.cooling} cooling` : "")
      + (c.disabled ? `, ${c.disabled} disabled` : "") + (c.expired ? `, ${c.expired} expired` : "") : "no pool";
    const upstream = p.upstream_outage ? "outage" : p.discovery && p.discovery !== "ok" ? "models: " + p.discovery : "ok";
    const models = el("td", { className: "wrap" }, (p.models || []).join(", ") || "none yet");
    cells(body.insertRow(), [name, p.mode, models, counts + (p.refreshing ? " (refreshing)" : ""),
      el("td", { className: upstream === "ok" ? "ok" : "degraded" }, upstream)]);
  }
}

function showPools(providers) {
  const box = $("pools");
  box.replaceChildren();
  for (const [name, p] of Object.entries(providers)) {
    if (!p.pooled) continue;
    const actions = el("span", { className: "pool-actions" },
      el("button", { type: "button", onclick: () => act(`/admin/providers/${encodeURIComponent(name)}/credentials/reset-all`, `${name}: every credential reset`) }, "Reset all"),
      p.tokens_file ? el("button", { type: "button", onclick: () => act(`/admin/providers/${encodeURIComponent(name)}/credentials/reload`, `${name}: token files reloaded`) }, "Reload files") : null,
      el("button", { type: "button", onclick: () => act(`/admin/providers/${encodeURIComponent(name)}/credentials/force-refresh`, `${name}: refresh started`) }, "Refresh now"));
    const table = el("table", { "data-provider": name },
      el("thead", {}, cells(el("tr"), ["#", "Id", "Token", "Account", "State", "Failures", "Served", "In flight", "Cooling until", "Last error", ""].map((h) => el("th", {}, h)))));
    const body = table.createTBody();
    for (const c of p.credentials || []) {
      const path = `/admin/pools/${encodeURIComponent(name)}/${encodeURIComponent(c.id)}/`;
      const toggle = c.state === "disabled"
        ? el("button", { type: "button", onclick: () => act(path + "enable", `${name}: ${c.id} enabled`) }, "Enable")
        : el("button", { type: "button", className: "danger", onclick: () => act(path + "disable", `${name}: ${c.id} disabled`) }, "Disable");
      const row = cells(body.insertRow(), [c.index, el("td", {}, el("code", {}, c.id)), el("td", {}, el("code", {}, c.token || "–")),
        c.account || "–", el("td", {}, el("span", { className: "state " + c.state }, c.state)), num(c.failures), num(c.requests_served),
        num(c.in_flight), when(c.cooldown_until), el("td", { className: "wrap" }, c.disabled_reason || c.last_error || "–"),
        el("td", {}, toggle, " ", el("button", { type: "button", onclick: () => act(path + "reset", `${name}: ${c.id} reset`) }, "Reset"))]);
      row.dataset.credential = c.id;
    }
    const counts = p.counts ? `${p.counts.active} of ${p.counts.total} active` : "";
    box.append(el("div", { className: "pool" }, el("h3", {}, name, " ", el("span", { className: "muted" }, `(${p.mode}; ${counts})`), actions), table));
  }
  if (!box.children.length) box.append(el("p", { className: "muted" }, "No provider has a credential pool."));
}

function limits(k) {
  const parts = [];
  if (k.requests_per_minute) parts.push(`${k.requests_per_minute}/min`);
  if (k.tokens_per_day) parts.push(`${Number(k.tokens_per_day).toLocaleString("en")} tokens/day`);
  if (k.max_concurrent_streams) parts.push(`${k.max_concurrent_streams} streams`);
  return parts.join(", ") || "none";
}

function showKeys(data) {
  $("keys-file").textContent = data.file && data.file.last_reload_error ? "CLIENT_KEYS_FILE: " + data.file.last_reload_error : "";
  const body = $("keys").tBodies[0];
  body.replaceChildren();
  for (const k of data.keys) {
    const revoke = k.revocable
      ? el("button", { type: "button", className: "danger", onclick: () => revokeKey(k.name) }, "Revoke")
      : el("span", { className: "muted", title: k.source === "env" ? "change VALID_API_KEY to remove it" : "remove it from CLIENT_KEYS_FILE" }, "not revocable here");
    const row = cells(body.insertRow(), [k.name, el("td", {}, el("code", {}, k.key)), k.source,
      el("td", { className: "wrap" }, k.models ? k.models.join(", ") : "all"), limits(k),
      el("td", { className: k.expired ? "expired" : "" }, k.expires_at ? k.expires_at + (k.expired ? " (expired)" : "") : "never"), el("td", {}, revoke)]);
    row.dataset.key = k.name;
  }
}

function showUsage(data) {
  const table = $("usage");
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const u of data.usage) {
    cells(body.insertRow(), [u.key, u.provider, u.model, num(u.requests), num(u.input_tokens), num(u.output_tokens), num(u.errors)]);
  }
  const t = data.totals || {};
  table.tFoot.replaceChildren(cells(el("tr"), ["Total", "", "", num(t.requests), num(t.input_tokens), num(t.output_tokens), num(t.errors)]));
}

// -- what is done ---------------------------------------------------------------------------------

async function act(path, done) {
  try {
    const answer = await api("POST", path);
    notice(answer.message || done, false);
  } catch (error) {
    if (!(error instanceof Refused)) notice(error.message, true);
  }
  await refresh();
}

async function revokeKey(name) {
  if (!window.confirm(`Revoke the client key ${name}? Its running answers end now.`)) return;
  try {
    await api("DELETE", "/admin/keys/" + encodeURIComponent(name));
    notice(`Client key ${name} revoked`, false);
  } catch (error) {
    if (!(error instanceof Refused)) notice(error.message, true);
  }
  await refresh();
}

async function addKey(form) {
  const entry = { name: form.elements.name.value.trim() };
  const models = form.elements.models.value.split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) entry.models = models;
  for (const field of ["requests_per_minute", "tokens_per_day", "max_concurrent_streams"]) {
    if (form.elements[field].value) entry[field] = Number(form.elements[field].value);
  }
  if (form.elements.expires_at.value.trim()) entry.expires_at = form.elements.expires_at.value.trim();
  try {
    const answer = await api("POST", "/admin/keys", entry);
    $("new-key-value").textContent = answer.data.key;
    $("new-key").hidden = false;
    form.reset();
    notice(`Client key ${entry.name} added`, false);
  } catch (error) {
    if (!(error instanceof Refused)) notice(error.message, true);
  }
  await refresh();
}

// -- wiring ---------------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("admin-key").value.trim());
});
$("signout").addEventListener("click", () => signOut(""));
$("refresh").addEventListener("click", refresh);
$("auto").addEventListener("change", schedule);
$("add-key").addEventListener("submit", (event) => {
  event.preventDefault();
  addKey(event.target);
});
$("copy-key").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("new-key-value").textContent));
$("hide-key").addEventListener("click", () => {
  $("new-key-value").textContent = "";
  $("new-key").hidden = true;
});

if (sessionStorage.getItem(KEY_SLOT)) signIn(sessionStorage.getItem(KEY_SLOT));
