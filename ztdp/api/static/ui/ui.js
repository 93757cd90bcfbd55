// The live graph page: reads GET /v1/graph/live, then follows GET /v1/events as Server-Sent
// Events read through fetch (EventSource cannot send the Authorization header). Everything is
// built with DOM calls and textContent: nothing from the server is ever parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "ztdp.token";
  const STATUS_COLOURS = {
    Pending: "#80868b",
    Progressing: "#1a73e8",
    Ready: "#188038",
    Degraded: "#e37400",
    Drifted: "#b06000",
    Failed: "#c5221f",
    Blocked: "#8430ce",
    Deleting: "#3c4043",
    Deleted: "#3c4043",
  };
  const KINDS = {
    application: { shape: "round-rectangle", colour: "#c6dafc" },
    service: { shape: "ellipse", colour: "#d2e3fc" },
    version: { shape: "diamond", colour: "#e8eaed" },
    environment: { shape: "hexagon", colour: "#ceead6" },
    resourcetype: { shape: "tag", colour: "#fef7e0" },
    resource: { shape: "barrel", colour: "#feefc3" },
    policy: { shape: "octagon", colour: "#f3e8fd" },
    check: { shape: "triangle", colour: "#e6f4ea" },
    approval: { shape: "star", colour: "#fce8e6" },
    deployment: { shape: "round-rectangle", colour: STATUS_COLOURS.Pending },
    "resource-instance": { shape: "barrel", colour: STATUS_COLOURS.Pending },
  };
  const REALISED = new Set(["deployment", "resource-instance"]);
  const EDGES = {
    owns: { colour: "#9aa0a6", line: "solid" },
    has_version: { colour: "#9aa0a6", line: "dotted" },
    allowed_in: { colour: "#34a853", line: "dashed" },
    deploy: { colour: "#1a73e8", line: "solid" },
    uses: { colour: "#e37400", line: "solid" },
    policy: { colour: "#8430ce", line: "dashed" },
    satisfies: { colour: "#12b5cb", line: "dotted" },
    realises: { colour: "#202124", line: "solid" },
    runs_in: { colour: "#5f6368", line: "dashed" },
    depends_on: { colour: "#e37400", line: "dashed" },
  };

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let cy = null;
  let streaming = null; // the AbortController of the open event stream
  let selected = null;
  let eventSeq = 0; // counts events received, to tell a status newer than a graph read
  const fromEvents = new Map(); // node id -> {seq, status, reason}
  let loading = null;
  let reloadAgain = false;

  class AuthError extends Error {}

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function badge(status) {
    const b = el("span", status || "-", "badge");
    b.dataset.status = status || "";
    b.style.backgroundColor = STATUS_COLOURS[status] || "#9aa0a6";
    return b;
  }

  function authHeaders() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  async function api(path) {
    const r = await fetch(path, { headers: { ...authHeaders(), Accept: "application/json" } });
    if (r.status === 401) throw new AuthError("the server refused the token");
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && (body.detail || body.title)) || "HTTP " + r.status);
    return body;
  }

  function showError(err) {
    const box = $("error");
    if (!err) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.textContent = String(err.message || err);
  }

  // --- logging in ----------------------------------------------------------------------------

  function showLogin(message) {
    stopStream();
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("logout").hidden = true;
    $("who").textContent = "";
    $("token").focus();
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault(); // nothing is posted anywhere: the token stays in this tab
    token = $("token").value.trim();
    $("token").value = "";
    start();
  });

  $("logout").addEventListener("click", () => {
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });

  async function start() {
    try {
      const me = await api("/v1/whoami");
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      $("login").hidden = true;
      $("logout").hidden = !token;
      $("who").textContent = token ? me.principal : "authentication off";
    } catch (err) {
      if (err instanceof AuthError) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(token ? "That token was refused." : "");
        return;
      }
      showError(err);
      return;
    }
    follow();
  }

  // --- the graph -----------------------------------------------------------------------------

  function label(node) {
    const rest = node.id.slice(node.id.indexOf("/") + 1);
    if (node.kind === "version") return rest.split("/").slice(1).join(" ");
    if (REALISED.has(node.kind)) return rest.split("/").slice(-1)[0];
    return rest.split("/").slice(-1)[0];
  }

  function colourOf(kind, status) {
    if (REALISED.has(kind)) return STATUS_COLOURS[status] || STATUS_COLOURS.Pending;
    return (KINDS[kind] || { colour: "#e8eaed" }).colour;
  }

  function makeGraph() {
    cy = cytoscape({
      container: $("graph"),
      style: [
        {
          selector: "node",
          style: {
            label: "data(label)",
            shape: "data(shape)",
            "background-color": "data(colour)",
            "border-width": 1,
            "border-color": "#5f6368",
            "font-size": 10,
            "text-valign": "bottom",
            "text-margin-y": 3,
            width: 28,
            height: 28,
          },
        },
        { selector: "node:selected", style: { "border-width": 4, "border-color": "#fbbc04" } },
        {
          selector: "edge",
          style: {
            width: 1.5,
            "curve-style": "bezier",
            "target-arrow-shape": "triangle",
            "line-color": "data(colour)",
            "target-arrow-color": "data(colour)",
            "line-style": "data(line)",
            "arrow-scale": 0.8,
          },
        },
      ],
    });
    cy.on("tap", "node", (ev) => select(ev.target.id()));
    window.ztdp = { cy }; // for the browser's console (and the page's own tests)
  }

  function render(live, startSeq) {
    if (!cy) makeGraph();
    $("revision").textContent = "revision " + live.revision;
    const seen = new Set();
    let added = false;
    cy.batch(() => {
      for (const node of live.nodes) {
        seen.add(node.id);
        let status = node.data.status;
        let reason = node.data.reason;
        const recent = fromEvents.get(node.id);
        if (REALISED.has(node.kind) && recent && recent.seq > startSeq) {
          status = recent.status; // an event newer than this read: it wins
          reason = recent.reason;
        }
        const data = {
          id: node.id,
          kind: node.kind,
          label: label(node),
          shape: (KINDS[node.kind] || { shape: "ellipse" }).shape,
          colour: colourOf(node.kind, status),
          status: REALISED.has(node.kind) ? status : undefined,
          reason: reason,
          body: node.data,
        };
        const existing = cy.getElementById(node.id);
        if (existing.nonempty()) existing.data(data);
        else {
          cy.add({ group: "nodes", data });
          added = true;
        }
      }
      for (const edge of live.edges) {
        const id = edge.source + " " + edge.type + " " + edge.target;
        seen.add(id);
        if (cy.getElementById(id).nonempty()) continue;
        const style = EDGES[edge.type] || { colour: "#9aa0a6", line: "solid" };
        cy.add({
          group: "edges",
          data: { id, source: edge.source, target: edge.target, type: edge.type, ...style },
        });
        added = true;
      }
      cy.elements().forEach((e) => {
        if (!seen.has(e.id())) e.remove();
      });
    });
    if (added) {
      // The force-directed layout reads well but costs O(n^2): a large graph is laid on a grid.
      const big = cy.nodes().length > 400;
      cy.layout(big ? { name: "grid", avoidOverlap: true } : { name: "cose", animate: false, randomize: false, nodeDimensionsIncludeLabels: true }).run();
    }
    renderList();
    if (selected && cy.getElementById(selected).nonempty()) showStatus(selected);
  }

  function renderList() {
    const byKind = new Map();
    cy.nodes().forEach((n) => {
      const kind = n.data("kind");
      if (!byKind.has(kind)) byKind.set(kind, []);
      byKind.get(kind).push(n);
    });
    const box = $("nodes");
    box.replaceChildren();
    for (const kind of [...byKind.keys()].sort()) {
      box.append(el("h4", kind + " (" + byKind.get(kind).length + ")"));
      const ul = el("ul");
      for (const n of byKind.get(kind).sort((a, b) => (a.id() < b.id() ? -1 : 1))) {
        const li = el("li");
        li.dataset.id = n.id();
        li.dataset.kind = kind;
        if (n.data("status")) li.dataset.status = n.data("status");
        if (n.id() === selected) li.classList.add("selected");
        const b = el("button");
        b.type = "button";
        if (n.data("status")) b.append(badge(n.data("status")));
        b.append(document.createTextNode(n.id()));
        b.addEventListener("click", () => select(n.id()));
        li.append(b);
        ul.append(li);
      }
      box.append(ul);
    }
  }

  async function reload() {
    // One read at a time; changes that arrive during a read cause one more afterwards.
    if (loading) {
      reloadAgain = true;
      return loading;
    }
    loading = (async () => {
      do {
        reloadAgain = false;
        const startSeq = eventSeq;
        try {
          render(await api("/v1/graph/live"), startSeq);
          showError(null);
        } catch (err) {
          if (err instanceof AuthError) return showLogin("The token was refused; give another.");
          showError(err);
        }
      } while (reloadAgain);
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
  }

  function setStatus(id, status, reason) {
    fromEvents.set(id, { seq: eventSeq, status, reason });
    const n = cy && cy.getElementById(id);
    if (!n || n.empty()) return reload(); // a realisation this page has not read yet
    n.data({ status, reason, colour: colourOf(n.data("kind"), status) });
    const li = document.querySelector('#nodes li[data-id="' + CSS.escape(id) + '"]');
    if (li) {
      li.dataset.status = status;
      const old = li.querySelector(".badge");
      if (old) old.replaceWith(badge(status));
    }
    if (id === selected) showStatus(id);
  }

  // --- the live stream -----------------------------------------------------------------------

  function stopStream() {
    if (streaming) streaming.abort();
    streaming = null;
    $("live").dataset.state = "idle";
    $("live").textContent = "not connected";
  }

  async function follow() {
    stopStream();
    const ctrl = new AbortController();
    streaming = ctrl;
    let backoff = 500;
    while (!ctrl.signal.aborted) {
      try {
        const r = await fetch("/v1/events", {
          headers: { ...authHeaders(), Accept: "text/event-stream" },
          signal: ctrl.signal,
          cache: "no-store",
        });
        if (r.status === 401) return showLogin("The token was refused; give another.");
        if (!r.ok || !r.body) throw new Error("event stream answered HTTP " + r.status);
        $("live").dataset.state = "live";
        $("live").textContent = "live";
        backoff = 500;
        reload(); // subscribed: read the graph, so that nothing falls between read and stream
        await readStream(r.body);
      } catch (err) {
        if (ctrl.signal.aborted) return;
      }
      $("live").dataset.state = "reconnecting";
      $("live").textContent = "reconnecting";
      await new Promise((done) => setTimeout(done, backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  async function readStream(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onEvent(JSON.parse(data)); // comment lines (": keep-alive") carry no data
      }
    }
  }

  function onEvent(event) {
    eventSeq += 1;
    const data = event.data || {};
    if (event.type === "io.ztdp.actor.status") setStatus(event.subject, data.status, data.error || data.message || null);
    else if (event.type === "io.ztdp.graph.changed") reload();
    if (selected && event.subject === selected) prependEvent(event);
  }

  // --- details of one node -------------------------------------------------------------------

  async function select(id) {
    selected = id;
    cy.elements(":selected").unselect();
    cy.getElementById(id).select();
    document.querySelectorAll("#nodes li.selected").forEach((li) => li.classList.remove("selected"));
    const li = document.querySelector('#nodes li[data-id="' + CSS.escape(id) + '"]');
    if (li) li.classList.add("selected");
    const node = cy.getElementById(id);
    $("hint").hidden = true;
    $("node").hidden = false;
    $("node").dataset.id = id;
    $("node-id").textContent = id;
    $("node-kind").textContent = node.data("kind");
    const body = node.data("body") || {};
    const source = REALISED.has(node.data("kind")) ? cy.getElementById(body.source) : null;
    const spec = source && source.nonempty() ? source.data("body") : body;
    $("node-spec").textContent = JSON.stringify(spec.spec !== undefined ? spec.spec : spec, null, 2);
    showStatus(id);
    $("node-events").replaceChildren(el("li", "loading...", "muted"));
    $("node-plan").replaceChildren(el("p", "loading...", "muted"));
    await Promise.all([showEvents(id), showPlan(id)]);
  }

  function showStatus(id) {
    const node = cy.getElementById(id);
    const box = $("node-status");
    box.replaceChildren();
    const rows = [];
    if (REALISED.has(node.data("kind"))) rows.push(node);
    else {
      // what realises this node, or runs in this environment
      node.connectedEdges().forEach((e) => {
        const t = e.data("type");
        if (t === "realises" && e.source().id() === id) rows.push(e.target());
        if (t === "runs_in" && e.target().id() === id) rows.push(e.source());
      });
      if (node.data("kind") === "service" || node.data("kind") === "application") {
        const prefix = node.data("kind") === "service" ? "deployment/" + id.slice(8) + "@" : "deployment/" + id.slice(12) + "/";
        cy.nodes().forEach((n) => {
          if (n.id().startsWith(prefix) || (node.data("kind") === "application" && n.data("kind") === "resource-instance" && ownerOf(n) === id)) rows.push(n);
        });
      }
    }
    if (!rows.length) {
      box.append(el("p", "not realised anywhere", "muted"));
      return;
    }
    const ul = el("ul");
    for (const n of rows) {
      const li = el("li");
      li.dataset.node = n.id();
      li.append(badge(n.data("status")), document.createTextNode(n.id()));
      const reason = n.data("reason");
      if (reason) li.append(el("div", reason, "muted"));
      const since = (n.data("body") || {}).since;
      if (since && n.data("status") === (n.data("body") || {}).status) li.append(el("div", "since " + since, "muted"));
      ul.append(li);
    }
    box.append(ul);
  }

  function ownerOf(instance) {
    const source = cy.getElementById((instance.data("body") || {}).source);
    const owner = source.incomers("edge").filter((e) => e.data("type") === "owns");
    return owner.nonempty() ? owner.first().source().id() : null;
  }

  function eventItem(event) {
    const li = el("li");
    li.append(el("time", (event.time || "").replace("T", " ").slice(0, 19)));
    li.append(el("strong", (event.type || "").replace(/^io\.ztdp\./, "")));
    const d = event.data || {};
    const detail = d.status || d.action || d.summary || "";
    if (detail) li.append(document.createTextNode(" " + detail));
    const why = d.error || d.message || d.reason;
    if (why) li.append(el("div", why, "muted"));
    if (Array.isArray(d.changes) && d.changes.length) {
      // drift: what the live object has (before) against what ZTDP applied (after)
      li.append(diffTable("live object / applied", d.changes, "drift"));
    }
    return li;
  }

  function prependEvent(event) {
    const list = $("node-events");
    const empty = list.querySelector(".muted:only-child");
    if (empty) empty.remove();
    list.prepend(eventItem(event));
  }

  async function showEvents(id) {
    const list = $("node-events");
    try {
      const events = await api("/v1/events?node=" + encodeURIComponent(id) + "&limit=20");
      if (selected !== id) return;
      list.replaceChildren(...events.reverse().map(eventItem));
      if (!events.length) list.append(el("li", "no events", "muted"));
    } catch (err) {
      list.replaceChildren(el("li", String(err.message || err), "muted"));
    }
  }

  // Which plans say something about a node: [application, environment] pairs, and which of
  // their steps are the node's.
  function plansFor(id) {
    const node = cy.getElementById(id);
    const kind = node.data("kind");
    const body = node.data("body") || {};
    const envsOf = (test) => {
      const envs = new Set();
      cy.nodes().forEach((n) => {
        if (REALISED.has(n.data("kind")) && test(n)) envs.add(n.data("body").environment);
      });
      return [...envs].sort();
    };
    const parts = id.split("/");
    if (kind === "deployment") {
      const [app] = parts[1].split("@");
      return { pairs: [[app, body.environment]], mine: (s) => s.node === id };
    }
    if (kind === "resource-instance") {
      const owner = ownerOf(node);
      if (!owner) return null;
      return { pairs: [[owner.slice(12), body.environment]], mine: (s) => s.node === id };
    }
    if (kind === "application") {
      const app = parts[1];
      const envs = envsOf((n) => n.id().startsWith("deployment/" + app + "/") || ownerOf(n) === id);
      return { pairs: envs.map((e) => [app, e]), mine: () => true };
    }
    if (kind === "service" || kind === "version") {
      const [app, svc] = [parts[1], parts[2]];
      const envs = envsOf((n) => n.id().startsWith("deployment/" + app + "/" + svc + "@"));
      const mine = kind === "service" ? (s) => s.node.startsWith("deployment/" + app + "/" + svc + "@") : (s) => s.source === id;
      return { pairs: envs.map((e) => [app, e]), mine };
    }
    if (kind === "environment" || kind === "resource") {
      const pairs = new Set();
      cy.nodes().forEach((n) => {
        const b = n.data("body") || {};
        if (!REALISED.has(n.data("kind"))) return;
        if (kind === "environment" && b.environment !== parts[1]) return;
        if (kind === "resource" && b.source !== id) return;
        const app = n.data("kind") === "deployment" ? n.id().split("/")[1] : (ownerOf(n) || "").slice(12);
        if (app) pairs.add(app + " " + b.environment);
      });
      const mine = kind === "resource" ? (s) => s.source === id : () => true;
      return { pairs: [...pairs].sort().map((p) => p.split(" ")), mine };
    }
    return null;
  }

  async function showPlan(id) {
    const box = $("node-plan");
    const what = plansFor(id);
    if (!what) {
      box.replaceChildren(el("p", "a " + cy.getElementById(id).data("kind") + " is not realised: no plan", "muted"));
      return;
    }
    if (!what.pairs.length) {
      box.replaceChildren(el("p", "deployed nowhere: no plan", "muted"));
      return;
    }
    const parts = [];
    for (const [app, env] of what.pairs) {
      try {
        const plan = await api("/v1/applications/" + encodeURIComponent(app) + "/plan?environment=" + encodeURIComponent(env));
        parts.push(renderPlan(plan, app, env, what.mine));
      } catch (err) {
        parts.push(el("p", app + " in " + env + ": " + (err.message || err), "muted"));
      }
    }
    if (selected === id) box.replaceChildren(...parts);
  }

  function show(value) {
    return value === undefined ? "" : JSON.stringify(value);
  }

  function diffTable(title, changes, cls) {
    const t = el("table", null, "diff " + cls);
    const head = el("tr");
    const th = el("th", title);
    th.colSpan = 3;
    head.append(th);
    t.append(head);
    for (const change of changes) {
      const tr = el("tr");
      tr.append(el("td", change.path), el("td", show(change.before), "before"), el("td", show(change.after), "after"));
      t.append(tr);
    }
    return t;
  }

  function renderPlan(plan, app, env, mine) {
    const div = el("div", null, "plan");
    div.dataset.plan = app + "@" + env;
    div.append(el("h4", app + " in " + env + " (revision " + plan.revision + ")"));
    const steps = plan.waves.flatMap((w) => w.steps).filter(mine);
    const changing = steps.filter((s) => s.action !== "noop");
    if (!changing.length) {
      div.append(el("p", "nothing to change", "muted no-change"));
      return div;
    }
    for (const step of changing) {
      const t = diffTable(step.action + " " + step.node, step.diff || [], "diff");
      t.dataset.node = step.node;
      t.dataset.action = step.action;
      if (step.blocked_by) {
        const tr = el("tr");
        const td = el("td", "blocked: " + step.blocked_by);
        td.colSpan = 3;
        tr.append(td);
        t.append(tr);
      }
      for (const failed of (step.decision && step.decision.failed) || []) {
        const tr = el("tr");
        const td = el("td", "policy " + failed.policy + " (" + failed.mode + "): " + failed.reason);
        td.colSpan = 3;
        tr.append(td);
        t.append(tr);
      }
      div.append(t);
    }
    return div;
  }

  // --- the legend ----------------------------------------------------------------------------

  for (const status of Object.keys(STATUS_COLOURS)) {
    const li = el("li");
    li.append(badge(status));
    $("legend-status").append(li);
  }
  for (const [type, style] of Object.entries(EDGES)) {
    const li = el("li");
    const swatch = el("span", null, "swatch");
    swatch.style.borderTopColor = style.colour;
    swatch.style.borderTopStyle = style.line;
    li.append(swatch, document.createTextNode(type));
    $("legend-edges").append(li);
  }

  start();
})();
