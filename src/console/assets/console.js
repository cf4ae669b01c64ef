// The Redwire operator console: one page, routed by the URL's #fragment, that
// reads and acts through the relative api/ (so it works under any path prefix).
// Everything from the server is put in the page as text, never as markup.
"use strict";

const TOKEN_KEY = "redwire.token";
const STATES = ["waiting", "delayed", "active", "completed", "dead"];

// el("td", {class: "num"}, "3") builds an element; children may be strings.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== undefined && value !== null) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

const enc = encodeURIComponent;

// count(1, "job") is "1 job", count(2, "job") "2 jobs".
const count = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = "Bearer " + token;
  const options = { headers };
  if (body !== undefined) {
    options.method = "POST";
    headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch("api/" + path, options);
  const value = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, value.code || String(response.status), value.message || response.statusText);
  return value;
}

function notice(kind, text) {
  const box = document.getElementById("notice");
  box.className = kind;
  box.textContent = text;
  box.hidden = !text;
}

// Runs an action, says how it went, and shows the page again with fresh numbers.
async function act(path, body, done) {
  try {
    const result = await api(path, body);
    notice("ok", done(result));
    await show();
  } catch (e) {
    notice("error", e.code ? `${e.code}: ${e.message}` : String(e));
  }
}

function card(label, value) {
  return el("div", { class: "card", "data-label": label }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
    el("tbody", {}, rows));
}

function num(value) {
  return el("td", { class: "num" }, value);
}

const queueLink = (q) => el("a", { href: `#/queue/${enc(q)}` }, q);

// A bar chart of the last hour: per minute, enqueued beside completed and failed.
function historyChart(history) {
  const width = 720, height = 160, pad = 20;
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const failed = (m) => m.retried + m.dead_lettered;
  const top = Math.max(1, ...history.map((m) => Math.max(m.enqueued, m.completed + failed(m))));
  const slot = (width - 2 * pad) / Math.max(1, history.length);
  const scale = (n) => (n / top) * (height - 2 * pad);
  history.forEach((m, i) => {
    const x = pad + i * slot;
    const bar = (cls, y0, n, dx) => {
      if (!n) return;
      const h = scale(n);
      const rect = svg("rect", { class: cls, x: x + dx, y: height - pad - y0 - h, width: Math.max(1, slot / 2 - 1), height: h });
      rect.append(svg("title", {}));
      rect.lastChild.textContent = `${m.start_time}: ${n} ${cls}`;
      chart.append(rect);
    };
    bar("enqueued", 0, m.enqueued, 0);
    bar("completed", 0, m.completed, slot / 2);
    bar("failed", scale(m.completed), failed(m), slot / 2);
  });
  const label = svg("text", { x: pad, y: 14, "font-size": 11, fill: "#5b6577" });
  label.textContent = `peak ${top}/min`;
  chart.append(label);
  chart.setAttribute("aria-label", `jobs per minute over the last ${history.length} minutes`);
  return el("div", {}, chart,
    el("div", { class: "legend muted" },
      el("span", {}, el("i", { class: "enqueued" }), "enqueued"),
      el("span", {}, el("i", { class: "completed" }), "completed"),
      el("span", {}, el("i", { class: "failed" }), "failed (retried or dead-lettered)")));
}

// A small bar line of completions per minute, for the overview.
function sparkline(values) {
  const width = 120, height = 24;
  const chart = svg("svg", { class: "spark", width, height, role: "img", "aria-label": "completed per minute" });
  const top = Math.max(1, ...values);
  const slot = width / Math.max(1, values.length);
  values.forEach((v, i) => {
    if (!v) return;
    const h = (v / top) * height;
    chart.append(svg("rect", { class: "completed", x: i * slot, y: height - h, width: Math.max(1, slot - 0.5), height: h }));
  });
  return chart;
}

const pages = [];
function route(pattern, render) {
  pages.push({ pattern, render });
}

// The table of pub/sub names, for the overview and the pub/sub page.
function channelTable(channels) {
  return channels.length ? table(
    ["Name", "Kind", { label: "Subscribers", num: 1 }, { label: "Dropped", num: 1 }],
    channels.map((c) => el("tr", {}, el("td", {}, c.name), el("td", {}, c.kind), num(c.subscribers), num(c.dropped))))
    : el("p", { class: "muted" }, "No subscribers on this instance.");
}

// The table of held locks, for the overview and the locks page.
function lockTable(locks) {
  return locks.length ? table(
    ["Resource", "TTL", { label: "Fencing token", num: 1 }, { label: "Waiters", num: 1 }],
    locks.map((l) => el("tr", {}, el("td", {}, el("a", { href: `#/locks/${enc(l.resource)}` }, l.resource)), el("td", {}, l.ttl), num(l.fencing_token), num(l.waiters))))
    : el("p", { class: "muted" }, "No locks held.");
}

const OVERVIEW_LISTS = ["queues", "streams", "channels", "locks"];

route(/^\/?$/, async (_, query) => {
  const data = await api("overview?" + OVERVIEW_LISTS.map((l) => `${l}_after=${enc(query.get(`${l}_after`) || "")}`).join("&"));
  const more = (key, token) => token ? el("p", {}, el("a", { href: `#/?${key}=${enc(token)}` }, "Next page →")) : null;
  return [
    el("h1", {}, "Overview"),
    el("h2", {}, "Queues"),
    data.queues.length ? table(
      ["Queue", { label: "Waiting", num: 1 }, { label: "Delayed", num: 1 }, { label: "Active", num: 1 }, { label: "Dead", num: 1 }, "", "Completed / min, last hour"],
      data.queues.map((q) => el("tr", {},
        el("td", {}, queueLink(q.queue)), num(q.waiting), num(q.delayed), num(q.active), num(q.dead),
        el("td", {}, q.paused ? el("span", { class: "tag paused" }, "paused") : ""),
        el("td", {}, sparkline(q.completed_per_minute))))) : el("p", { class: "muted" }, "No queues yet."),
    more("queues_after", data.queues_next),
    el("h2", {}, "Streams"),
    data.streams.length ? table(
      ["Stream", { label: "Length", num: 1 }, "Last id", { label: "Groups", num: 1 }, { label: "Dead letters", num: 1 }],
      data.streams.map((s) => el("tr", {},
        el("td", {}, el("a", { href: `#/stream/${enc(s.stream)}` }, s.stream)), num(s.length), el("td", {}, s.last_id),
        num(s.groups.length), num(s.dead_letters)))) : el("p", { class: "muted" }, "No streams yet."),
    more("streams_after", data.streams_next),
    el("h2", {}, "Pub/sub ", el("span", { class: "muted" }, "(this instance)")),
    channelTable(data.channels),
    more("channels_after", data.channels_next),
    el("h2", {}, "Held locks"),
    lockTable(data.locks),
    more("locks_after", data.locks_next),
  ];
});

route(/^\/pubsub$/, async (_, query) => {
  const page = await api(`channels?page_token=${enc(query.get("page_token") || "")}`);
  return [
    el("h1", {}, "Pub/sub"),
    el("p", { class: "muted" }, "What the subscribers of this Redwire instance listen to now; each instance lists its own. A subscription's dropped messages count toward every name it includes."),
    channelTable(page.channels),
    page.next_page_token ? el("p", {}, el("a", { href: `#/pubsub?page_token=${enc(page.next_page_token)}` }, "Next page →")) : null,
  ];
});

function queueTabs(queue, current) {
  const tab = (href, label) => el("a", { href, class: current === label ? "current" : null }, label);
  return el("div", { class: "tabs" },
    tab(`#/queue/${enc(queue)}`, "summary"),
    STATES.map((s) => s === "dead" ? tab(`#/queue/${enc(queue)}/dead`, "dead") : tab(`#/queue/${enc(queue)}/jobs/${s}`, s)));
}

route(/^\/queue\/([^/]+)$/, async ([queue]) => {
  const q = await api(`queues/${enc(queue)}`);
  const rate = q.rate_limit_max ? `${q.rate_limit_max} per ${q.rate_limit_window}` : "none";
  return [
    el("h1", {}, "Queue ", q.queue, " ", q.paused ? el("span", { class: "tag paused" }, "paused") : el("span", { class: "tag" }, "running")),
    queueTabs(queue, "summary"),
    el("div", { class: "cards" },
      STATES.map((s) => card(s, q[s])),
      card("rate limit", rate),
      card("next waiting since", q.next_waiting_since || "—")),
    el("div", { class: "actions" },
      q.paused
        ? el("button", { id: "resume", onclick: () => act(`queues/${enc(queue)}/resume`, {}, () => `Resumed ${queue}.`) }, "Resume")
        : el("button", { id: "pause", onclick: () => act(`queues/${enc(queue)}/pause`, {}, () => `Paused ${queue}.`) }, "Pause")),
    el("h2", {}, "Last hour, per minute"),
    historyChart(q.history),
    lookupForm(queue),
  ];
});

function lookupForm(queue) {
  const input = el("input", { id: "lookup", placeholder: "job id or idempotency key", size: 40 });
  return el("form", { class: "actions", onsubmit: (e) => { e.preventDefault(); if (input.value) location.hash = `#/queue/${enc(queue)}/job/${enc(input.value.trim())}`; } },
    el("label", {}, "Find a job ", input), el("button", { type: "submit" }, "Look up"));
}

function preview(job) {
  const text = job.payload_encoding === "text" ? job.payload : `0x${job.payload}`;
  return text.length > 80 ? text.slice(0, 80) + "…" : text;
}

function jobRow(queue, job, selectable) {
  return el("tr", {},
    selectable ? el("td", {}, el("input", { type: "checkbox", class: "pick", value: job.job_id, "aria-label": `select ${job.job_id}` })) : null,
    el("td", {}, el("a", { href: `#/queue/${enc(queue)}/job/${enc(job.job_id)}` }, job.job_id)),
    num(`${job.attempts}/${job.max_attempts || "∞"}`),
    el("td", {}, job.enqueue_time),
    el("td", {}, job.errors.length ? job.errors[job.errors.length - 1] : ""),
    el("td", { class: "muted" }, preview(job)));
}

route(/^\/queue\/([^/]+)\/jobs\/([a-z]+)$/, async ([queue, state], query) => {
  const token = query.get("page_token") || "";
  const page = await api(`queues/${enc(queue)}/jobs?state=${enc(state)}&page_token=${enc(token)}`);
  return [
    el("h1", {}, `${queue}: ${state} jobs `, el("span", { class: "muted" }, `(${page.total})`)),
    queueTabs(queue, state),
    lookupForm(queue),
    page.jobs.length
      ? table(["Job", { label: "Attempts", num: 1 }, "Enqueued", "Last error", "Payload"], page.jobs.map((j) => jobRow(queue, j, false)))
      : el("p", { class: "muted" }, `No ${state} jobs.`),
    page.next_page_token ? el("p", {}, el("a", { href: `#/queue/${enc(queue)}/jobs/${state}?page_token=${enc(page.next_page_token)}` }, "Next page →")) : null,
  ];
});

// The payload as text, pretty JSON, or hex; the view says which it came as.
function payloadView(job) {
  const bytes = job.payload_encoding === "hex"
    ? Uint8Array.from(job.payload.match(/../g) || [], (h) => parseInt(h, 16))
    : new TextEncoder().encode(job.payload);
  const forms = { hex: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ") };
  if (job.payload_encoding === "text") {
    forms.text = job.payload;
    try { forms.json = JSON.stringify(JSON.parse(job.payload), null, 2); } catch { /* not JSON */ }
  }
  const order = ["json", "text", "hex"].filter((f) => f in forms);
  const shown = el("pre", { id: "payload" }, forms[order[0]]);
  const buttons = order.map((f) => el("button", { type: "button", "data-form": f, onclick: () => { shown.textContent = forms[f]; } }, f));
  return [el("div", { class: "actions" }, "Show as ", buttons), shown];
}

route(/^\/queue\/([^/]+)\/job\/(.+)$/, async ([queue, id]) => {
  const job = await api(`queues/${enc(queue)}/jobs/${enc(id)}`);
  const deletable = ["waiting", "delayed", "dead", "completed"].includes(job.state);
  const fields = [
    ["state", job.state], ["attempts", `${job.attempts} of ${job.max_attempts || "unlimited"}`],
    ["priority", job.priority], ["group", job.group || "—"], ["enqueued", job.enqueue_time],
    // due_time is the lease's end while a consumer holds the job.
    [job.state === "active" ? "lease ends" : "due", job.due_time || "—"], ["trace id", job.trace_id || "—"],
  ];
  return [
    el("h1", {}, `Job ${job.job_id}`),
    el("p", {}, "in queue ", queueLink(queue)),
    el("table", { id: "job-fields" }, el("tbody", {}, fields.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))),
    el("h2", {}, "Payload"), payloadView(job),
    el("h2", {}, "Attributes"),
    Object.keys(job.attributes).length
      ? table(["Name", "Value"], Object.entries(job.attributes).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))))
      : el("p", { class: "muted" }, "None."),
    el("h2", {}, "Error history"),
    job.errors.length ? el("ol", { id: "errors" }, job.errors.map((e) => el("li", {}, e))) : el("p", { class: "muted" }, "No errors."),
    job.result ? [el("h2", {}, "Result"), el("pre", {}, job.result)] : null,
    el("div", { class: "actions" },
      job.state === "dead" ? el("button", { onclick: () => act(`queues/${enc(queue)}/redrive`, { job_ids: [job.job_id] }, (r) => `Redrove ${count(r.redriven, "job")}.`) }, "Redrive") : null,
      deletable ? el("button", { class: "danger", onclick: () => confirm(`Delete job ${job.job_id}?`) && act(`queues/${enc(queue)}/jobs/${enc(job.job_id)}/delete`, {}, (r) => `Deleted ${r.deleted} (was ${r.state}).`) }, "Delete") : null),
  ];
});

route(/^\/queue\/([^/]+)\/dead$/, async ([queue], query) => {
  const token = query.get("page_token") || "";
  const [grouping, page] = await Promise.all([
    api(`queues/${enc(queue)}/dead-groups`),
    api(`queues/${enc(queue)}/jobs?state=dead&page_token=${enc(token)}`),
  ]);
  const redrive = (body) => act(`queues/${enc(queue)}/redrive`, body, (r) => `Redrove ${count(r.redriven, "job")}.`);
  const confirmInput = el("input", { id: "purge-confirm", placeholder: `type ${queue} to confirm`, autocomplete: "off" });
  return [
    el("h1", {}, `${queue}: dead letters `, el("span", { class: "muted" }, `(${grouping.total})`)),
    queueTabs(queue, "dead"),
    lookupForm(queue),
    el("h2", {}, "By last error"),
    grouping.grouped < grouping.total
      ? el("p", { class: "muted", id: "grouping-cap" }, `Grouped the first ${grouping.grouped} of ${grouping.total} dead letters (the console groups at most ${grouping.cap}); redrive all covers every one.`)
      : null,
    grouping.groups.length ? table(["Last error", { label: "Jobs", num: 1 }, "Examples", ""],
      grouping.groups.map((g) => el("tr", { class: "group" },
        el("td", {}, g.error || el("span", { class: "muted" }, "(no error recorded)")), num(g.count),
        el("td", { class: "muted" }, g.sample.join(", ")),
        el("td", {}, el("button", { class: "redrive-group", onclick: () => redrive({ error: g.error }) }, `Redrive ${g.count}`)))))
      : el("p", { class: "muted" }, "No dead letters."),
    el("div", { class: "actions" },
      el("button", { id: "redrive-all", disabled: !grouping.total, onclick: () => confirm(`Redrive all ${grouping.total} dead letters of ${queue}?`) && redrive({ all: true }) }, "Redrive all"),
      confirmInput,
      el("button", { id: "purge", class: "danger", disabled: !grouping.total, onclick: () => act(`queues/${enc(queue)}/purge-dead`, { confirm: confirmInput.value }, (r) => `Purged ${count(r.purged, "dead letter")}.`) }, "Purge dead letters")),
    el("h2", {}, "Dead letters"),
    page.jobs.length ? [
      table(["", "Job", { label: "Attempts", num: 1 }, "Enqueued", "Last error", "Payload"], page.jobs.map((j) => jobRow(queue, j, true))),
      el("div", { class: "actions" },
        el("button", { id: "redrive-selected", onclick: () => {
          const ids = Array.from(document.querySelectorAll("input.pick:checked"), (box) => box.value);
          if (ids.length) redrive({ job_ids: ids }); else notice("error", "Select dead letters first.");
        } }, "Redrive selected")),
    ] : null,
    page.next_page_token ? el("p", {}, el("a", { href: `#/queue/${enc(queue)}/dead?page_token=${enc(page.next_page_token)}` }, "Next page →")) : null,
  ];
});

route(/^\/stream\/([^/]+)$/, async ([stream]) => {
  const s = await api(`streams/${enc(stream)}`);
  const group = el("input", { id: "claim-group", placeholder: "group", value: s.groups[0] ? s.groups[0].name : "" });
  const consumer = el("input", { id: "claim-consumer", placeholder: "to consumer" });
  const idle = el("input", { id: "claim-idle", type: "number", min: 0, value: 60, size: 6 });
  return [
    el("h1", {}, `Stream ${s.stream}`),
    el("div", { class: "cards" }, card("length", s.length), card("first id", s.first_id || "—"), card("last id", s.last_id || "—"), card("dead letters", s.dead_letters)),
    el("h2", {}, "Consumer groups"),
    s.groups.length ? table(["Group / consumer", { label: "Pending", num: 1 }, { label: "Lag", num: 1 }, "Last delivered / idle"],
      s.groups.flatMap((g) => [
        el("tr", {}, el("td", {}, el("strong", {}, g.name)), num(g.pending), num(g.lag < 0 ? "?" : g.lag), el("td", {}, g.last_delivered_id)),
        ...g.consumers.map((c) => el("tr", {}, el("td", {}, "  ", c.name), num(c.pending), el("td", {}), el("td", { class: "muted" }, `idle ${c.idle || "0ms"}`))),
      ])) : el("p", { class: "muted" }, "No consumer groups."),
    el("form", { class: "actions", onsubmit: (e) => {
      e.preventDefault();
      act(`streams/${enc(stream)}/claim`, { group: group.value, consumer: consumer.value, min_idle_seconds: Number(idle.value) },
        (r) => `Claimed ${count(r.claimed, "entry", "entries")} for ${consumer.value}${r.dead_lettered ? `, ${r.dead_lettered} dead-lettered` : ""}.`);
    } }, "Claim entries idle at least ", idle, " s in ", group, " for ", consumer, el("button", { type: "submit" }, "Claim")),
    el("h2", {}, `Newest ${s.entries.length} entries`),
    s.entries.length ? table(["Id", "Fields"], s.entries.map((e) => el("tr", {}, el("td", {}, e.id),
      el("td", {}, Object.entries(e.fields).map(([k, v]) => el("div", {}, el("strong", {}, k), " = ", v)))))) : el("p", { class: "muted" }, "Empty."),
  ];
});

route(/^\/locks(?:\/(.+))?$/, async ([resource], query) => {
  const input = el("input", { id: "resource", placeholder: "resource", value: resource || "" });
  const form = el("form", { class: "actions", onsubmit: (e) => { e.preventDefault(); if (input.value) location.hash = `#/locks/${enc(input.value)}`; } },
    el("label", {}, "Resource ", input), el("button", { type: "submit" }, "Describe"));
  if (!resource) {
    const page = await api(`locks?page_token=${enc(query.get("page_token") || "")}`);
    return [
      el("h1", {}, "Locks"), form,
      el("h2", {}, "Held now"),
      lockTable(page.locks),
      page.next_page_token ? el("p", {}, el("a", { href: `#/locks?page_token=${enc(page.next_page_token)}` }, "Next page →")) : null,
    ];
  }
  const lock = await api(`locks/${enc(resource)}`);
  return [
    el("h1", {}, "Locks"), form,
    el("div", { class: "cards", id: "lock" },
      card("resource", lock.resource), card("held", lock.held ? "yes" : "no"),
      card("ttl", lock.ttl || "—"), card("fencing token", lock.fencing_token), card("waiters", lock.waiters)),
  ];
});

// Shows the page the #fragment names, or the sign-in form when a token is needed.
async function show() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(search || "");
  const main = document.getElementById("page");
  const page = pages.find((p) => p.pattern.test(path || "/"));
  if (!page) {
    main.replaceChildren(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/" }, "Overview")));
    return;
  }
  const args = (path || "/").match(page.pattern).slice(1).map((a) => a === undefined ? a : decodeURIComponent(a));
  try {
    main.replaceChildren(...[await page.render(args, query)].flat(3).filter((n) => n));
  } catch (e) {
    if (e.status === 401) showSignin(true);
    main.replaceChildren(el("h1", {}, "Cannot show this page"), el("p", { class: "error", id: "page-error" }, e.code ? `${e.code}: ${e.message}` : String(e)));
  }
}

function showSignin(needed) {
  const signedIn = Boolean(sessionStorage.getItem(TOKEN_KEY));
  document.getElementById("signin").hidden = !needed && signedIn;
  document.getElementById("signout").hidden = !signedIn;
}

async function start() {
  const session = await api("session").catch(() => ({ auth: false }));
  if (session.auth) showSignin(!sessionStorage.getItem(TOKEN_KEY));
  document.getElementById("signin").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showSignin(false);
    notice("", "");
    show();
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin(true);
    show();
  });
  window.addEventListener("hashchange", () => { notice("", ""); show(); });
  show();
}

start();
