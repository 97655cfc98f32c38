// golcn admin page: plain JavaScript, no build step, no dependencies.
//
// Rendering rule: every piece of data from the API reaches the DOM through
// textContent (the el() helper) or a vetted attribute; innerHTML is never
// used, so a group reason or a service name cannot inject markup.
//
// The page talks to the REST API at ../v1/ (relative to /admin/) with the
// session cookie; every POST carries the session's CSRF token in the
// X-CSRF-Token header.
(function () {
  "use strict";

  var API = "../v1/";
  var GROUP_STATES = ["ACTIVE", "PREPARING", "COMMITTING", "COMMITTED", "ROLLING_BACK", "ROLLED_BACK"];
  var session = null; // {principal, csrf_token, expires}
  var renderSeq = 0; // the latest render; older ones drop their results
  var cursorHistory = { key: "", stack: [] }; // group list: cursors of earlier pages

  // ---- DOM helpers ------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  // el(tag, attrs, children...): attrs values are set as attributes (or
  // as properties for on* handlers given as functions); children are nodes
  // or strings (text nodes), arrays are flattened, null/undefined skipped.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (typeof v === "function") {
          node.addEventListener(k.replace(/^on/, ""), v);
        } else if (k === "href") {
          node.setAttribute("href", safeHref(String(v)));
        } else {
          node.setAttribute(k, v === true ? "" : String(v));
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    if (typeof child === "string" || typeof child === "number") {
      node.appendChild(document.createTextNode(String(child)));
      return;
    }
    node.appendChild(child);
  }

  // Only in-page routes are linked.
  function safeHref(h) { return h.charAt(0) === "#" ? h : "#/overview"; }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function badge(state) {
    var s = String(state || "UNKNOWN");
    return el("span", { "class": "badge state-" + s.replace(/[^A-Z_]/g, ""), "data-state": s }, s);
  }

  function fmtTime(s) {
    if (!s) return "—";
    var d = new Date(s);
    if (isNaN(d.getTime())) return String(s);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function timeCell(s) {
    return el("td", { "class": "mono time", title: s ? new Date(s).toString() : null }, fmtTime(s));
  }

  function groupLink(id) {
    return el("a", { href: "#/groups/" + encodeURIComponent(id), "class": "mono group-link", "data-id": id }, String(id));
  }

  function short(id) { id = String(id || ""); return id.length > 12 ? id.slice(0, 12) + "…" : id; }

  function table(headers, rows, attrs) {
    var tbody = el("tbody", null, rows);
    if (!rows.length) {
      tbody.appendChild(el("tr", null, el("td", { colspan: headers.length, "class": "empty" }, "Nothing to show.")));
    }
    return el("table", attrs, el("thead", null, el("tr", null, headers.map(function (h) { return el("th", null, h); }))), tbody);
  }

  // ---- messages ---------------------------------------------------------

  function showError(msg) {
    $("error-text").textContent = msg;
    $("error").hidden = false;
  }
  function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }
  function showNotice(msg) {
    $("notice-text").textContent = msg;
    $("notice").hidden = false;
  }
  function clearNotice() { $("notice").hidden = true; $("notice-text").textContent = ""; }

  // ---- API --------------------------------------------------------------

  function ApiError(status, message, param) {
    this.status = status;
    this.message = message;
    this.param = param || "";
  }
  ApiError.prototype.toString = function () {
    var s = this.message;
    if (this.param) s += " (parameter " + this.param + ")";
    return s + " [HTTP " + this.status + "]";
  };

  function request(method, url, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      opts.headers["X-CSRF-Token"] = session ? session.csrf_token : "";
      if (body !== undefined) {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(body);
      }
    }
    return fetch(url, opts).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        if (text) {
          try { data = JSON.parse(text); } catch (e) { data = null; }
        }
        if (!resp.ok) {
          var e = data && data.error ? data.error : {};
          var msg = e.message || (text && !data ? text.slice(0, 300) : resp.statusText) || "request failed";
          throw new ApiError(resp.status, msg, e.param);
        }
        return data;
      });
    }, function (err) {
      throw new ApiError(0, "cannot reach the TxManager: " + err.message);
    });
  }

  function api(method, path, body) {
    return request(method, API + path, body).catch(function (err) {
      if (err instanceof ApiError && err.status === 401) {
        session = null;
        showLogin("Your session has ended: " + err.message + ". Log in again.");
      }
      throw err;
    });
  }

  function qs(params) {
    var p = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      if (params[k] !== "" && params[k] !== null && params[k] !== undefined) p.set(k, params[k]);
    });
    var s = p.toString();
    return s ? "?" + s : "";
  }

  // ---- session ----------------------------------------------------------

  function showLogin(msg) {
    $("nav").hidden = true;
    $("user").hidden = true;
    clear($("view"));
    $("login").hidden = false;
    clearNotice();
    if (msg) showError(msg); else clearError();
    $("secret").value = "";
    $("secret").focus();
  }

  function loggedIn(s) {
    session = s;
    $("login").hidden = true;
    $("nav").hidden = false;
    $("user").hidden = false;
    $("principal").textContent = "Signed in as " + s.principal;
    route();
  }

  function doLogin(ev) {
    ev.preventDefault();
    clearError();
    var btn = $("login-submit");
    btn.disabled = true;
    var body = new URLSearchParams();
    body.set("secret", $("secret").value);
    fetch("login", { method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" }, body: body })
      .then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (data) {
          if (!resp.ok) {
            var e = data && data.error ? data.error : {};
            throw new ApiError(resp.status, e.message || resp.statusText);
          }
          return data;
        });
      })
      .then(function (s) { $("secret").value = ""; loggedIn(s); })
      .catch(function (err) { showError("Login failed: " + err.toString()); $("secret").select(); })
      .then(function () { btn.disabled = false; });
  }

  function logout() {
    request("POST", "logout").catch(function () {}).then(function () {
      session = null;
      showLogin();
    });
  }

  // ---- routing ----------------------------------------------------------

  function parseHash() {
    var h = location.hash.replace(/^#\/?/, "");
    var q = "";
    var i = h.indexOf("?");
    if (i >= 0) { q = h.slice(i + 1); h = h.slice(0, i); }
    var parts = h.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts: parts, query: new URLSearchParams(q) };
  }

  function setActiveNav(name) {
    ["overview", "groups", "compensations"].forEach(function (n) {
      $("nav-" + n).classList.toggle("active", n === name);
    });
  }

  function route() {
    if (!session) return;
    var r = parseHash();
    var seq = ++renderSeq;
    var view = $("view");
    clear(view);
    view.appendChild(el("p", { "class": "loading" }, "Loading…"));
    var page;
    if (r.parts[0] === "groups" && r.parts.length > 1) {
      setActiveNav("groups");
      page = viewGroup(r.parts[1]);
    } else if (r.parts[0] === "groups") {
      setActiveNav("groups");
      page = viewGroups(r.query);
    } else if (r.parts[0] === "compensations") {
      setActiveNav("compensations");
      page = viewCompensations(r.query);
    } else {
      setActiveNav("overview");
      page = viewOverview();
    }
    page.then(function (node) {
      if (seq !== renderSeq) return;
      clear(view);
      view.appendChild(node);
    }, function (err) {
      if (seq !== renderSeq) return;
      clear(view);
      if (err instanceof ApiError && err.status === 401) return; // login shown
      showError(err.toString());
      view.appendChild(el("p", { "class": "empty", id: "view-failed" }, "This view could not be loaded. ",
        el("a", { href: "#/overview" }, "Back to the overview")));
    });
  }

  function go(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }

  // ---- overview ---------------------------------------------------------

  function viewOverview() {
    return Promise.all([api("GET", "overview"), api("GET", "groups" + qs({ attention: "true", limit: 20 }))]).then(function (res) {
      var ov = res[0] || {};
      var att = (res[1] && res[1].groups) || [];
      var byState = ov.groups_by_state || {};
      // docs/openapi.yaml: needing_attention, decision_latency {p50_ms, p99_ms, count, window_seconds}.
      var lat = ov.decision_latency || {};
      var p50 = lat.p50_ms, p99 = lat.p99_ms;
      if (ov.decision_latency_ms) { p50 = ov.decision_latency_ms.p50; p99 = ov.decision_latency_ms.p99; }
      var attentionCount = ov.needing_attention !== undefined ? ov.needing_attention : ov.needs_attention;
      var states = GROUP_STATES.slice();
      Object.keys(byState).forEach(function (s) { if (states.indexOf(s) < 0) states.push(s); });
      var ms = function (v) { return typeof v === "number" ? v.toFixed(v < 10 ? 1 : 0) + " ms" : "—"; };

      return el("div", { id: "overview", "data-view": "overview" },
        el("h1", null, "Overview"),
        el("div", { "class": "cards" },
          card("In flight", ov.in_flight, "#/groups", "card-in-flight"),
          card("Needs attention", attentionCount, "#/compensations", "card-attention", attentionCount > 0),
          el("div", { "class": "card", id: "card-latency" },
            el("div", { "class": "label" }, "Decision latency p50 / p99"),
            el("div", { "class": "value" }, ms(p50) + " / " + ms(p99)),
            lat.count !== undefined ? el("div", { "class": "label" }, lat.count + " decision" + (lat.count === 1 ? "" : "s") +
              (lat.window_seconds ? " in the last " + fmtWindow(lat.window_seconds) : "")) : null)),
        el("h2", null, "Groups by state"),
        ov.complete === false ? el("p", { "class": "hint" }, "Counted over the newest groups only (the store holds more).") : null,
        table(["State", "Groups"], states.map(function (s) {
          return el("tr", { "data-state": s },
            el("td", null, el("a", { href: "#/groups?state=" + encodeURIComponent(s) }, badge(s))),
            el("td", { "class": "num" }, String(byState[s] || 0)));
        }), { id: "states-table" }),
        el("h2", null, "Groups needing attention"),
        groupTable(att, "attention-table"));
    });
  }

  function fmtWindow(sec) {
    if (sec % 3600 === 0) return (sec / 3600) + " h";
    if (sec % 60 === 0) return (sec / 60) + " min";
    return sec + " s";
  }

  function card(label, value, href, id, warn) {
    return el("div", { "class": "card" + (warn ? " attention" : ""), id: id },
      el("a", { href: href },
        el("div", { "class": "label" }, label),
        el("div", { "class": "value" }, value === undefined || value === null ? "—" : String(value))));
  }

  function groupTable(groups, id) {
    return table(["Group", "State", "Starter service", "Services", "Branches", "Created", "Decided", "Finished", "Reason / attention"],
      groups.map(function (g) {
        return el("tr", { "data-id": g.id, "data-state": g.state },
          el("td", null, groupLink(g.id)),
          el("td", null, badge(g.state)),
          el("td", null, g.starter_service || "—"),
          el("td", null, (g.services || []).join(", ")),
          el("td", { "class": "num" }, String(g.branches === undefined ? "—" : g.branches)),
          timeCell(g.created), timeCell(g.decided), timeCell(g.finished),
          el("td", null,
            g.attention ? el("div", { "class": "attention" }, "⚠ " + g.attention) : null,
            g.open_compensations ? el("div", { "class": "attention" }, g.open_compensations + " open compensation" + (g.open_compensations === 1 ? "" : "s")) : null,
            g.reason ? el("div", null, g.reason) : null));
      }), { id: id, "class": "groups" });
  }

  // ---- group list -------------------------------------------------------

  function toLocalInput(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    var p = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes());
  }
  function fromLocalInput(v) {
    if (!v) return "";
    var d = new Date(v);
    return isNaN(d.getTime()) ? "" : d.toISOString().replace(/\.\d+Z$/, "Z");
  }

  function viewGroups(q) {
    var f = {
      state: q.get("state") || "",
      service: q.get("service") || "",
      attention: q.get("attention") === "true" ? "true" : "",
      created_after: q.get("created_after") || "",
      created_before: q.get("created_before") || "",
      limit: q.get("limit") || "50",
    };
    var cursor = q.get("cursor") || "";
    var key = JSON.stringify(f);
    if (cursorHistory.key !== key) cursorHistory = { key: key, stack: [] };
    var params = Object.assign({}, f, { cursor: cursor });

    return api("GET", "groups" + qs(params)).then(function (res) {
      var groups = (res && res.groups) || [];
      var next = (res && res.next_cursor) || "";

      var stateSel = el("select", { name: "state", id: "filter-state" },
        el("option", { value: "" }, "any state"),
        GROUP_STATES.map(function (s) { return el("option", { value: s, selected: s === f.state }, s); }));
      var service = el("input", { name: "service", id: "filter-service", placeholder: "starter service", value: f.service });
      var attention = el("input", { type: "checkbox", name: "attention", id: "filter-attention", checked: f.attention === "true" });
      var after = el("input", { type: "datetime-local", name: "created_after", id: "filter-after", value: toLocalInput(f.created_after) });
      var before = el("input", { type: "datetime-local", name: "created_before", id: "filter-before", value: toLocalInput(f.created_before) });
      var limit = el("select", { name: "limit", id: "filter-limit" },
        ["20", "50", "100", "200"].map(function (n) { return el("option", { value: n, selected: n === f.limit }, n + " per page"); }));

      var filters = el("form", { "class": "filters panel", id: "group-filters", onsubmit: function (ev) {
        ev.preventDefault();
        go("#/groups" + qs({
          state: stateSel.value, service: service.value.trim(), attention: attention.checked ? "true" : "",
          created_after: fromLocalInput(after.value), created_before: fromLocalInput(before.value),
          limit: limit.value === "50" ? "" : limit.value,
        }));
      } },
        el("label", null, "State", stateSel),
        el("label", null, "Service", service),
        el("label", null, "Created after", after),
        el("label", null, "Created before", before),
        el("label", null, "Page size", limit),
        el("label", { "class": "check" }, attention, "needs attention"),
        el("button", { type: "submit", id: "filter-apply" }, "Filter"),
        el("button", { type: "button", "class": "secondary", onclick: function () { go("#/groups"); } }, "Reset"));

      var idInput = el("input", { id: "group-search", name: "id", placeholder: "group id (32 hex characters)", size: 36, autocomplete: "off" });
      var search = el("form", { "class": "filters panel", id: "group-search-form", onsubmit: function (ev) {
        ev.preventDefault();
        var id = idInput.value.trim().toLowerCase();
        if (!id) { showError("Enter a group id to open it."); return; }
        go("#/groups/" + encodeURIComponent(id));
      } },
        el("label", null, "Open a group by id", idInput),
        el("button", { type: "submit", id: "group-search-submit" }, "Open"));

      var pageIndex = cursorHistory.stack.length;
      var pager = el("div", { "class": "toolbar", id: "pager" },
        el("span", { "class": "count" }, groups.length + " group" + (groups.length === 1 ? "" : "s") + " on page " + (pageIndex + 1)),
        el("span", { "class": "spacer" }),
        el("button", { type: "button", "class": "secondary", id: "page-prev", disabled: pageIndex === 0, onclick: function () {
          var prev = cursorHistory.stack.pop() || "";
          go("#/groups" + qs(Object.assign({}, f, { limit: f.limit === "50" ? "" : f.limit, cursor: prev })));
        } }, "← Previous"),
        el("button", { type: "button", "class": "secondary", id: "page-next", disabled: !next, onclick: function () {
          cursorHistory.stack.push(cursor);
          go("#/groups" + qs(Object.assign({}, f, { limit: f.limit === "50" ? "" : f.limit, cursor: next })));
        } }, "Next →"));

      return el("div", { id: "groups", "data-view": "groups" },
        el("h1", null, "Groups"), search, filters, pager, groupTable(groups, "groups-table"));
    });
  }

  // ---- group detail -----------------------------------------------------

  function viewGroup(id) {
    return api("GET", "groups/" + encodeURIComponent(id)).then(function (g) {
      var retryBtn = el("button", { type: "button", id: "group-retry", "class": "secondary",
        disabled: ["COMMITTING", "ROLLING_BACK"].indexOf(g.state) < 0,
        title: "Push the decision again to every branch that has not acknowledged it",
        onclick: function () {
          retryBtn.disabled = true;
          clearError();
          api("POST", "groups/" + encodeURIComponent(g.id) + "/retry").then(function (res) {
            showNotice("Phase 2 pushed again for group " + g.id + (res && res.state ? " (now " + res.state + ")" : "") + ".");
            route();
          }, function (err) { showError(err.toString()); retryBtn.disabled = false; });
        } }, "Retry phase 2");

      var fields = [
        ["State", badge(g.state)],
        ["Starter service", g.starter_service || "—"],
        g.starter ? ["Starter", el("span", { "class": "mono" }, g.starter)] : null,
        ["Created", fmtTime(g.created)],
        ["Deadline", fmtTime(g.deadline)],
        ["Decided", fmtTime(g.decided)],
        ["Finished", fmtTime(g.finished)],
        ["Reason", g.reason || "—"],
      ].filter(Boolean);
      var branches = g.branches || [];
      var comps = g.compensations || [];
      var timeline = g.timeline || [];

      return el("div", { id: "group-detail", "data-view": "group", "data-id": g.id, "data-state": g.state },
        el("div", { "class": "toolbar" },
          el("a", { href: "#/groups" }, "← Groups"), el("span", { "class": "spacer" }), retryBtn),
        el("h1", null, "Group ", el("span", { "class": "mono", id: "group-id" }, g.id), " ", badge(g.state)),
        g.attention ? el("div", { "class": "callout", id: "group-attention" }, el("strong", null, "Needs attention: "), g.attention) : null,
        el("div", { "class": "panel" },
          el("dl", { "class": "fields" }, fields.map(function (f) { return [el("dt", null, f[0]), el("dd", null, f[1])]; }))),
        el("h2", null, "Branches (" + branches.length + ")"),
        table(["Branch", "Service", "Instance", "Datasource", "Mode", "State", "Reason"], branches.map(function (b) {
          return el("tr", { "data-id": b.id, "data-state": b.state },
            el("td", { "class": "mono", title: b.id }, short(b.id)),
            el("td", null, b.service || "—"),
            el("td", { "class": "mono" }, b.instance || "—"),
            el("td", null, b.datasource || "—"),
            el("td", null, b.mode || "—"),
            el("td", null, badge(b.state)),
            el("td", null, b.reason || ""));
        }), { id: "branches-table" }),
        el("h2", null, "Timeline"),
        timeline.length ? el("ol", { "class": "timeline", id: "timeline" }, timeline.map(function (e) {
          return el("li", { "data-kind": e.kind },
            el("span", { "class": "at mono" }, fmtTime(e.at)),
            el("span", { "class": "kind" }, e.kind || "event"),
            e.branch ? el("span", { "class": "mono", title: e.branch }, "branch " + short(e.branch) + " ") : null,
            e.state ? badge(e.state) : null,
            e.reason ? el("span", { "class": "reason" }, e.reason) : null);
        })) : el("p", { "class": "empty", id: "timeline" }, "No events recorded."),
        comps.length ? [el("h2", null, "Compensations (" + comps.length + ")"), compTable(comps, "group-compensations", "")] : null);
    });
  }

  // ---- compensations ----------------------------------------------------

  function viewCompensations(q) {
    var status = q.get("status") || "open";
    if (["open", "resolved", "all"].indexOf(status) < 0) status = "open";
    return api("GET", "compensations" + qs({ status: status })).then(function (res) {
      var list = (res && res.compensations) || [];
      return el("div", { id: "compensations", "data-view": "compensations", "data-status": status },
        el("h1", null, "Compensations"),
        el("p", { "class": "hint" }, "Branches the TxManager could not bring to the group's outcome by itself (lost, heuristic, or phase 2 failing after retries). Retry pushes the decision again; resolve records that an operator fixed it by hand, with a reason kept for audit."),
        el("div", { "class": "tabs" }, ["open", "resolved", "all"].map(function (s) {
          return el("a", { href: "#/compensations?status=" + s, id: "tab-" + s, "class": s === status ? "active" : null }, s.charAt(0).toUpperCase() + s.slice(1));
        })),
        compTable(list, "compensations-table", status));
    });
  }

  var COMP_HEADERS = ["Marker", "Group", "Branch", "Service / instance", "Kind", "Detail", "Created", "Status", "Actions"];

  function isResolved(c) { return c.status === "resolved" || !!(c.resolution || c.resolved); }

  function compTable(list, id, status) {
    var tbody = el("tbody");
    list.forEach(function (c) { tbody.appendChild(compRow(c)); });
    if (!list.length) {
      tbody.appendChild(el("tr", null, el("td", { colspan: COMP_HEADERS.length, "class": "empty" },
        "No " + (status === "all" || !status ? "" : status + " ") + "compensations.")));
    }
    return el("table", { id: id, "class": "compensations" },
      el("thead", null, el("tr", null, COMP_HEADERS.map(function (h) { return el("th", null, h); }))), tbody);
  }

  function compRow(c) {
    var res = c.resolution || c.resolved || null;
    var done = isResolved(c);
    var row = el("tr", { "data-id": c.id, "data-status": done ? "resolved" : "open", "class": done ? "is-resolved" : "is-open" },
      el("td", { "class": "mono", title: c.id }, short(c.id)),
      el("td", null, c.group ? groupLink(c.group) : "—"),
      el("td", { "class": "mono", title: c.branch || "" }, short(c.branch) || "—"),
      el("td", null, c.service || "—", el("div", { "class": "mono" }, c.instance || "")),
      el("td", null, el("span", { "class": "badge state-" + (c.kind === "branch_lost" ? "LOST" : "PREPARING") }, String(c.kind || "?"))),
      el("td", null, c.detail || ""),
      timeCell(c.created),
      el("td", { "class": "status" }, done
        ? el("span", { "class": "resolved" }, "Resolved" + (res ? " by " + (res.by || "?") + " at " + fmtTime(res.at) + ": " + (res.reason || "") : ""))
        : el("span", { "class": "badge state-LOST" }, "OPEN")),
      el("td", { "class": "actions" }, done ? null : [
        el("button", { type: "button", "class": "small secondary retry", onclick: function (ev) { retryComp(c, ev.currentTarget); } }, "Retry"),
        " ",
        el("button", { type: "button", "class": "small resolve", onclick: function () { openResolve(c, row); } }, "Resolve…"),
      ]));
    return row;
  }

  function retryComp(c, btn) {
    btn.disabled = true;
    clearError();
    api("POST", "compensations/" + encodeURIComponent(c.id) + "/retry").then(function () {
      showNotice("Phase 2 pushed again for compensation " + c.id + ".");
      btn.disabled = false;
    }, function (err) { showError(err.toString()); btn.disabled = false; });
  }

  function openResolve(c, row) {
    var existing = row.nextSibling;
    if (existing && existing.classList && existing.classList.contains("resolve-row")) {
      existing.querySelector("input").focus();
      return;
    }
    var reason = el("input", { type: "text", "class": "reason", name: "reason", required: true, maxlength: 1000,
      placeholder: "Why is this resolved? (kept as an audit record)" });
    var confirmBtn = el("button", { type: "submit", "class": "small confirm-resolve" }, "Mark resolved");
    var formRow = el("tr", { "class": "resolve-row", "data-for": c.id },
      el("td", { colspan: COMP_HEADERS.length },
        el("form", { "class": "resolve-form", onsubmit: function (ev) {
          ev.preventDefault();
          var why = reason.value.trim();
          if (!why) { showError("A reason is required to resolve a compensation."); reason.focus(); return; }
          confirmBtn.disabled = true;
          clearError();
          api("POST", "compensations/" + encodeURIComponent(c.id) + "/resolve", { reason: why }).then(function (marker) {
            var updated = marker && marker.id ? marker : Object.assign({}, c, { status: "resolved", resolution: { by: session ? session.principal : "admin", at: new Date().toISOString(), reason: why } });
            var newRow = compRow(updated);
            row.parentNode.replaceChild(newRow, row);
            formRow.parentNode.removeChild(formRow);
            showNotice("Compensation " + c.id + " resolved.");
          }, function (err) { showError(err.toString()); confirmBtn.disabled = false; });
        } },
          el("label", null, "Reason for resolving " + short(c.id) + ": "),
          reason, confirmBtn,
          el("button", { type: "button", "class": "small secondary", onclick: function () { formRow.parentNode.removeChild(formRow); } }, "Cancel"))));
    row.parentNode.insertBefore(formRow, row.nextSibling);
    reason.focus();
  }

  // ---- start ------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", doLogin);
    $("logout").addEventListener("click", logout);
    $("error-close").addEventListener("click", clearError);
    $("notice-close").addEventListener("click", clearNotice);
    window.addEventListener("hashchange", function () { clearError(); clearNotice(); route(); });
    request("GET", "session").then(loggedIn, function (err) {
      showLogin(err.status === 401 ? "" : err.toString());
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
