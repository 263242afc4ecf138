/**
 * The demo app served at `/`: sign in, live notifications (bell, badge, toasts) and live
 * execution progress, on top of `realtime.js`. No framework, no build step.
 *
 * Client options can be overridden before this module runs with
 * `window.RENUM_REALTIME_OPTIONS = {...}` (the browser tests shorten the backoff that way).
 */

import { RealtimeClient, State, decodeJwt } from "./realtime.js";

const config = JSON.parse(document.getElementById("renum-config").textContent);
const API = config.apiRoot;
const REFRESH_KEY = "renum.refresh";
const USERNAME_KEY = "renum.username";
const MAX_EXECUTIONS = 6;

const $ = (id) => document.getElementById(id);

/** The user must sign in again; the message says why. */
class SessionExpired extends Error {}

// ------------------------------------------------------------------ authentication

const auth = {
  access: null,
  /** Why the session ended, kept for the login screen after the refresh token is gone. */
  lostBecause: null,

  async login(username, password) {
    const response = await fetch(`${API}auth/token/`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (response.status === 401 || response.status === 400) throw new SessionExpired("Wrong username or password.");
    if (!response.ok) throw new Error(`Sign-in failed (HTTP ${response.status}).`);
    const body = await response.json();
    this.access = body.access;
    this.lostBecause = null;
    sessionStorage.setItem(REFRESH_KEY, body.refresh);
    sessionStorage.setItem(USERNAME_KEY, username);
  },

  /** An access token; a new one unless a cached one is good for 30 s more and `reason` allows it. */
  async accessToken({ reason = "connect" } = {}) {
    const claims = this.access ? decodeJwt(this.access) : null;
    if (reason === "connect" && claims?.exp && claims.exp * 1000 - Date.now() > 30000) return this.access;
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    if (!refresh) throw new SessionExpired(this.lostBecause || "please sign in.");
    const response = await fetch(`${API}auth/token/refresh/`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ refresh }),
    });
    if (response.status === 401 || response.status === 400) {
      this.forget();
      this.lostBecause = "your session has expired and could not be renewed. Please sign in again.";
      throw new SessionExpired(this.lostBecause);
    }
    if (!response.ok) throw new Error(`Could not renew the session (HTTP ${response.status}).`);
    const body = await response.json();
    this.access = body.access;
    if (body.refresh) sessionStorage.setItem(REFRESH_KEY, body.refresh);
    return this.access;
  },

  hasSession() {
    return Boolean(sessionStorage.getItem(REFRESH_KEY));
  },

  forget() {
    this.access = null;
    sessionStorage.removeItem(REFRESH_KEY);
    sessionStorage.removeItem(USERNAME_KEY);
  },
};

/** JSON over the REST API with the current access token (renewed once on 401). */
async function api(path, { method = "GET", body } = {}) {
  const call = async (token) => fetch(`${API}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json", "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let response = await call(await auth.accessToken());
  if (response.status === 401) response = await call(await auth.accessToken({ reason: "unauthorized" }));
  if (response.status === 401) throw new SessionExpired("your session has expired. Please sign in again.");
  if (!response.ok) {
    const detail = await response.json().catch(() => ({}));
    throw new Error(detail.detail || `${method} ${path} answered ${response.status}`);
  }
  return response.status === 204 ? null : response.json();
}

// ------------------------------------------------------------------ app state

let client = null;
let team = null;
let unreadCount = 0;
/** @type {Map<string, any>} notification id -> Notification */
const notifications = new Map();
/** @type {Map<string, any>} execution id -> ExecutionUpdate-like state */
const executions = new Map();
const cleanups = [];

// ------------------------------------------------------------------ views

function showLogin(message) {
  stopApp();
  $("app-view").hidden = true;
  $("session-actions").hidden = true;
  $("login-view").hidden = false;
  const box = $("login-message");
  box.textContent = message ? message[0].toUpperCase() + message.slice(1) : "";
  box.hidden = !message;
  $("username").focus();
}

async function startApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("session-actions").hidden = false;
  $("whoami").textContent = sessionStorage.getItem(USERNAME_KEY) || "";

  client = new RealtimeClient({
    url: config.socketPath,
    pollUrl: config.pollPath,
    getToken: ({ reason }) => auth.accessToken({ reason: reason === "connect" ? "connect" : "renew" }),
    ...(window.RENUM_REALTIME_OPTIONS || {}),
  });
  window.renumDemo = { client };
  cleanups.push(
    client.onStateChange(renderState),
    client.onMessage("notification", (m) => addNotification(m.payload, { toast: true })),
    client.onMessage("unread_count", (m) => {
      liveCountUpdates += 1;
      setUnread(m.payload.count);
    }),
    client.onMessage("notification_read", (m) => applyRead(m.payload)),
    client.onMessage("system_event", (m) => toast({ type: "info", title: "System", message: m.payload?.message ?? "" })),
    client.onResync(scheduleReload),
  );
  client.connect();
  try {
    await Promise.all([loadNotifications(), loadTeam()]);
  } catch (error) {
    handleError(error);
  }
}

function stopApp() {
  while (cleanups.length) cleanups.pop()();
  client?.disconnect();
  client = null;
  team = null;
  notifications.clear();
  executions.clear();
  renderNotifications();
  renderExecutions();
  $("team-activity").replaceChildren();
  $("team-activity-empty").hidden = false;
  setUnread(0);
}

/** Back to the login screen after the session was lost, saying why. */
function signedOut(reason) {
  auth.forget();
  showLogin(`You were signed out: ${reason}${/[.!?]$/.test(reason) ? "" : "."}`);
}

function handleError(error) {
  if (error instanceof SessionExpired) {
    signedOut(error.message);
  } else {
    toast({ type: "error", title: "Something went wrong", message: error.message || String(error) });
  }
}

// ------------------------------------------------------------------ connection pill

const PILL = {
  [State.IDLE]: ["Not connected", "idle"],
  [State.CONNECTING]: ["Connecting…", "pending"],
  [State.CONNECTED]: ["Connected", "ok"],
  [State.RECONNECTING]: ["Reconnecting", "pending"],
  [State.DEGRADED]: ["Degraded: polling", "warn"],
  [State.FAILED]: ["Disconnected", "bad"],
  [State.OFFLINE]: ["Offline", "bad"],
  [State.UNAUTHORIZED]: ["Signed out", "bad"],
};

function renderState(state, info) {
  if (state === State.UNAUTHORIZED) {
    signedOut(info.cause === "account_deactivated" ? "your account has been deactivated"
      : info.reason || "your credentials are no longer valid");
    return;
  }
  const [label, tone] = PILL[state] || [state, "idle"];
  const pill = $("connection-pill");
  pill.textContent = state === State.RECONNECTING ? `${label} (${info.attempt} of ${info.maxAttempts})` : label;
  // A refusal (4003: too many connections for this user) says why, not only that it retries.
  if (state === State.RECONNECTING && info.code === 4003 && info.reason) pill.textContent += `: ${info.reason}`;
  pill.title = info.reason || "";
  pill.className = `pill pill-${tone}`;
  pill.dataset.state = state;
  // Degraded: once the HTTP transport follows every channel, what came before it is reloaded.
  const listening = state === State.DEGRADED ? String(Boolean(info.listening)) : "";
  if (listening === "true" && pill.dataset.listening !== "true") scheduleReload();
  pill.dataset.listening = listening;
  $("retry-button").hidden = state !== State.FAILED && state !== State.DEGRADED;
}

// ------------------------------------------------------------------ notifications

let reloadTimer = null;

function scheduleReload() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => {
    Promise.all([loadNotifications(), team ? loadExecutions() : null]).catch(handleError);
  }, 200);
}

// Live messages are newer than any REST answer that was already on its way when they came:
// a reload merges its page into what the socket delivered and keeps a count pushed meanwhile.
let liveCountUpdates = 0;

async function loadNotifications() {
  const countUpdatesBefore = liveCountUpdates;
  const [page, unread] = await Promise.all([api("notifications/?page_size=30"), api("notifications/unread-count/")]);
  for (const item of page.results) notifications.set(item.id, { ...notifications.get(item.id), ...item });
  renderNotifications();
  if (liveCountUpdates === countUpdatesBefore) setUnread(unread.count);
}

function addNotification(notification, { toast: announce }) {
  const known = notifications.has(notification.id);
  notifications.set(notification.id, { ...notifications.get(notification.id), ...notification });
  renderNotifications();
  if (announce && !known) toast(notification);
}

function applyRead({ ids = [], all = false, before = null }) {
  const cutoff = before ? Date.parse(before) : Infinity;
  for (const item of notifications.values()) {
    if (ids.includes(item.id) || (all && Date.parse(item.created_at) <= cutoff)) item.read = true;
  }
  renderNotifications();
}

function setUnread(count) {
  unreadCount = count;
  const badge = $("badge");
  badge.textContent = count > 99 ? "99+" : String(count);
  badge.hidden = count === 0;
  $("bell").setAttribute("aria-label", `Notifications, ${count} unread`);
  $("bell").dataset.unread = String(count);
}

// Bursts: at most MAX_NOTIFICATIONS are kept (older ones stay a "load" away over REST), and
// the list is rebuilt at most once per frame however many messages came in it.
const MAX_NOTIFICATIONS = 100;
const MAX_TOASTS = 3;
let renderPending = false;

function renderNotifications() {
  if (notifications.size > MAX_NOTIFICATIONS) {
    const oldest = [...notifications.values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    for (const item of oldest.slice(0, notifications.size - MAX_NOTIFICATIONS)) notifications.delete(item.id);
  }
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderNotificationsNow();
  });
}

function renderNotificationsNow() {
  const list = $("notification-list");
  const items = [...notifications.values()].sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
  list.replaceChildren(...items.map(notificationItem));
  $("notification-empty").hidden = items.length > 0;
  $("mark-all-read").disabled = !items.some((item) => !item.read);
}

function notificationItem(item) {
  const li = document.createElement("li");
  li.className = `notification notification-${item.type}${item.read ? "" : " unread"}`;
  li.dataset.id = item.id;
  const title = document.createElement("strong");
  title.className = "notification-title";
  title.textContent = item.title;
  const message = document.createElement("p");
  message.textContent = item.message;
  const time = document.createElement("time");
  time.dateTime = item.created_at;
  time.textContent = new Date(item.created_at).toLocaleString();
  li.append(title, message, time);
  if (!item.read) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button mark-read";
    button.textContent = "Mark read";
    button.setAttribute("aria-label", `Mark “${item.title}” read`);
    button.addEventListener("click", () => markRead(item.id));
    li.append(button);
  } else {
    const status = document.createElement("span");
    status.className = "sr-only";
    status.textContent = "read";
    li.append(status);
  }
  return li;
}

/** Over the socket when connected; over REST otherwise (degraded, reconnecting). */
async function viaSocketOrRest(name, args, restPath) {
  if (client?.state === State.CONNECTED) {
    try {
      return await client.command(name, args);
    } catch (error) {
      if (!["unavailable", "disconnected", "timeout"].includes(error.code)) throw error;
    }
  }
  return api(restPath, { method: "POST", body: {} });
}

async function markRead(id) {
  try {
    const result = await viaSocketOrRest("notification.mark_read", { id }, `notifications/${id}/read/`);
    applyRead({ ids: [id] });
    if (typeof result?.count === "number") setUnread(result.count);
    else setUnread((await api("notifications/unread-count/")).count);
  } catch (error) {
    handleError(error);
  }
}

async function markAllRead() {
  try {
    const result = await viaSocketOrRest("notification.mark_all_read", {}, "notifications/read-all/");
    applyRead({ all: true });
    setUnread(result.count);
  } catch (error) {
    handleError(error);
  }
}

// ------------------------------------------------------------------ toasts

function toast({ type = "info", title, message }) {
  const box = document.createElement("div");
  box.className = `toast toast-${type}`;
  const text = document.createElement("div");
  const strong = document.createElement("strong");
  strong.textContent = title;
  const body = document.createElement("p");
  body.textContent = message;
  text.append(strong, body);
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", "Dismiss");
  close.textContent = "×";
  close.addEventListener("click", () => box.remove());
  box.append(text, close);
  const area = $("toasts");
  area.append(box);
  setTimeout(() => { box.remove(); updateToastOverflow(0); }, 8000);
  // At most MAX_TOASTS on screen; the overflow is counted in "+N more", not stacked.
  const shown = area.querySelectorAll(".toast");
  if (shown.length > MAX_TOASTS) {
    for (const old of [...shown].slice(0, shown.length - MAX_TOASTS)) old.remove();
    updateToastOverflow(shown.length - MAX_TOASTS);
  }
}

let toastOverflow = 0;

function updateToastOverflow(added) {
  const area = $("toasts");
  toastOverflow = area.querySelector(".toast") ? toastOverflow + added : 0;
  let more = area.querySelector(".toast-more");
  if (!toastOverflow) {
    more?.remove();
    return;
  }
  if (!more) {
    more = document.createElement("div");
    more.className = "toast-more";
    area.prepend(more);
  }
  more.textContent = `+${toastOverflow} more`;
}

// ------------------------------------------------------------------ executions

async function loadTeam() {
  const teams = await api("teams/");
  if (!teams.length) {
    team = null;
    $("team-info").textContent = "You are not a member of any team, so there is nothing to run. "
      + "Ask an administrator to add you to a team (Admin → Teams).";
    $("team-info").classList.add("notice");
    $("start-execution").disabled = true;
    return;
  }
  team = teams[0];
  $("team-info").textContent = `Team: ${team.name}`;
  $("team-info").classList.remove("notice");
  $("start-execution").disabled = false;
  cleanups.push(client.subscribe(`team:${team.id}`, (m) => {
    if (m.type === "execution_update") updateExecution(m.payload);
    else if (m.type in TEAM_EVENTS) addTeamActivity(m);
  }));
  await loadExecutions();
}

// The team service's events on `team:<id>` (docs/protocol.md), as one line each.
const TEAM_EVENTS = {
  team_member_joined: (p) => `${p.username} joined as ${p.role}`,
  team_member_left: (p) => `${p.username} left`,
  team_member_role_changed: (p) => `${p.username} is now ${p.role} (was ${p.previous_role})`,
  team_renamed: (p) => `Renamed from ${p.previous_name} to ${p.name}`,
};
const TEAM_ACTIVITY_MAX = 10;

function addTeamActivity(message) {
  const payload = message.payload ?? {};
  if (message.type === "team_renamed" && team && String(team.id) === String(payload.team_id)) {
    team.name = payload.name;
    $("team-info").textContent = `Team: ${team.name}`;
  }
  const item = document.createElement("li");
  item.textContent = TEAM_EVENTS[message.type](payload);
  const list = $("team-activity");
  list.prepend(item);
  while (list.children.length > TEAM_ACTIVITY_MAX) list.lastElementChild.remove();
  $("team-activity-empty").hidden = true;
}

async function loadExecutions() {
  const page = await api(`executions/?team=${team.id}`);
  for (const item of page.results.slice(0, MAX_EXECUTIONS)) updateExecution(executionFromApi(item), Date.parse(item.created_at));
}

/** Merge a state into the panel; `order` (newest first) is fixed when an execution is first seen. */
function updateExecution(update, order = Date.now()) {
  const known = executions.get(update.execution_id);
  // A REST answer may be older than a live update already shown: never move a bar backwards.
  if (known && Date.parse(known.updated_at) > Date.parse(update.updated_at)) return;
  executions.set(update.execution_id, { order, ...known, ...update });
  renderExecutions();
}

/** The API's execution as the socket's ExecutionUpdate. */
function executionFromApi(item) {
  return { execution_id: item.id, team_id: String(item.team), status: item.status, progress: item.progress,
    current_step: item.current_step, error: item.error, updated_at: item.updated_at };
}

function renderExecutions() {
  const ordered = [...executions.values()].sort((a, b) => b.order - a.order).slice(0, MAX_EXECUTIONS);
  $("execution-list").replaceChildren(...ordered.map(executionItem));
  $("execution-empty").hidden = ordered.length > 0 || !team;
}

function executionItem(item) {
  const li = document.createElement("li");
  li.className = `execution execution-${item.status}`;
  li.dataset.id = item.execution_id;
  const head = document.createElement("div");
  head.className = "execution-head";
  const name = document.createElement("span");
  name.className = "execution-name";
  name.textContent = `Execution ${item.execution_id.slice(0, 8)}`;
  const status = document.createElement("span");
  status.className = "execution-status";
  status.textContent = `${item.status} · ${item.progress} %`;
  head.append(name, status);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(item.progress));
  bar.setAttribute("aria-label", `Execution ${item.execution_id.slice(0, 8)} progress`);
  const fill = document.createElement("div");
  fill.className = "bar-fill";
  fill.style.width = `${item.progress}%`;
  bar.append(fill);
  const step = document.createElement("p");
  step.className = "execution-step muted";
  step.textContent = item.status === "completed" ? "Completed" : item.error || item.current_step || "Starting…";
  li.append(head, bar, step);
  return li;
}

async function startExecution() {
  const button = $("start-execution");
  button.disabled = true;
  try {
    const created = await api("executions/", { method: "POST", body: { team: team.id } });
    updateExecution(executionFromApi(created), Date.parse(created.created_at));
  } catch (error) {
    handleError(error);
  } finally {
    button.disabled = !team;
  }
}

// ------------------------------------------------------------------ wiring

function setPanel(open) {
  $("notification-panel").hidden = !open;
  $("bell").setAttribute("aria-expanded", String(open));
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username || !password) {
    showLogin("Enter your username and password.");
    return;
  }
  try {
    await auth.login(username, password);
    $("password").value = "";
    await startApp();
  } catch (error) {
    showLogin(error instanceof SessionExpired ? error.message : `Sign-in failed: ${error.message}`);
  }
});

$("logout").addEventListener("click", () => {
  auth.forget();
  showLogin("You signed out.");
});
$("retry-button").addEventListener("click", () => client?.retry());
$("bell").addEventListener("click", (event) => {
  event.stopPropagation();
  setPanel($("notification-panel").hidden);
});
$("notification-panel").addEventListener("click", (event) => event.stopPropagation());
document.addEventListener("click", () => setPanel(false));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("notification-panel").hidden) {
    setPanel(false);
    $("bell").focus();
  }
});
$("mark-all-read").addEventListener("click", markAllRead);
$("start-execution").addEventListener("click", startExecution);

if (auth.hasSession()) {
  auth.accessToken({ reason: "renew" }).then(startApp, (error) => {
    if (error instanceof SessionExpired) signedOut(error.message);
    else showLogin(`Could not restore your session: ${error.message}`);
  });
} else {
  showLogin("");
}
