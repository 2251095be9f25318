// Branchline web diagnostics: live updates over Server-Sent Events.
// The pages are complete without this script; it only keeps the elements marked
// data-live (with data-field, and data-port for a port) up to date from the
// `status` events of /api/v1/events/status. No inline script: the CSP forbids it.
"use strict";
// Forms marked data-busy say what they are doing while the server runs the tool.
(function () {
  var busy = document.getElementById("tool-busy");
  if (!busy) return;
  Array.prototype.forEach.call(document.querySelectorAll("form[data-busy]"), function (f) {
    f.addEventListener("submit", function () { busy.textContent = f.getAttribute("data-busy"); });
  });
})();
// Sections marked data-reload (with an id) fetch their page again every data-reload
// ms and take the fresh section's content (the queues page, and the charts at their
// sampling interval): server-rendered, so the page reads the same without this
// script.
(function () {
  if (!window.fetch || !window.DOMParser) return;
  Array.prototype.forEach.call(document.querySelectorAll("[data-reload][id]"), function (el) {
    var every = parseInt(el.getAttribute("data-reload"), 10) || 2000;
    setInterval(function () {
      fetch(window.location.pathname + window.location.search, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (!text) return;
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(el.id);
          if (fresh) el.innerHTML = fresh.innerHTML;
        })
        .catch(function () { /* keep the last good view */ });
    }, every);
  });
})();
(function () {
  if (!window.EventSource || !document.querySelector("[data-live]")) return;

  function clock(ms) {
    var s = Math.floor(ms / 1000) % 86400;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(Math.floor(s / 3600)) + ":" + two(Math.floor(s / 60) % 60) + ":" + two(s % 60);
  }
  var HOOK = { "on-hook": ["on-hook", "pill ok"], "off-hook": ["off-hook", "pill warn"],
               "unknown": ["not reported yet", "pill"] };
  function stateClass(s) {
    if (s === "idle") return "pill";
    if (s === "fault" || s === "lockout") return "pill bad";
    return "pill busy";
  }
  function set(el, text, cls) {
    if (el.textContent !== text) el.textContent = text;
    if (cls && el.className !== cls) el.className = cls;
  }
  function portField(p, field, el) {
    switch (field) {
      case "hook": var h = HOOK[p.hook] || [p.hook, "pill"]; set(el, h[0], h[1]); break;
      case "state": set(el, p.state, stateClass(p.state)); break;
      case "line":
        set(el, p.line ? (p.line.millivolts / 1000).toFixed(1) + " V, " +
            (p.line.microamps / 1000).toFixed(1) + " mA at " + clock(p.line.at_ms)
            : "not reported yet");
        break;
      case "fault": set(el, p.fault || "none"); break;
      case "ring_test": set(el, p.ring_test ? "ringing" : "off"); break;
      case "events":
        var items = p.events.slice().reverse();
        el.textContent = "";
        items.forEach(function (e) {
          var li = document.createElement("li"), t = document.createElement("time");
          t.textContent = clock(e.at_ms);
          li.appendChild(t);
          li.appendChild(document.createTextNode(" " + e.what));
          el.appendChild(li);
        });
        if (!items.length) {
          var none = document.createElement("li");
          none.className = "muted"; none.textContent = "none yet";
          el.appendChild(none);
        }
        break;
    }
  }
  function apply(status) {
    var ports = {};
    status.ports.forEach(function (p) { ports[p.port] = p; });
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var field = el.getAttribute("data-field"), port = el.getAttribute("data-port");
      if (port !== null) {
        if (ports[port]) portField(ports[port], field, el);
      } else if (field === "active_calls") {
        set(el, String(status.active_calls));
      } else if (field === "trunk") {
        set(el, status.trunk);
      } else if (field === "at") {
        set(el, clock(status.at_ms));
      }
    });
    document.documentElement.setAttribute("data-status-version", String(status.version));
  }
  var source = new EventSource("/api/v1/events/status");
  source.addEventListener("status", function (e) {
    try { apply(JSON.parse(e.data)); } catch (err) { /* keep the last good view */ }
  });
})();
// The SIP trace page: new messages matching the list's filter are appended as they
// pass (Server-Sent Events); repeats of a message already shown are skipped by seq.
(function () {
  var list = document.querySelector("ol[data-sip-trace]");
  if (!window.EventSource || !list) return;
  var last = -1;
  Array.prototype.forEach.call(list.querySelectorAll("li[data-seq]"), function (li) {
    last = Math.max(last, parseInt(li.getAttribute("data-seq"), 10));
  });
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function clock(ms) {
    var s = Math.floor(ms / 1000) % 86400;
    return two(Math.floor(s / 3600)) + ":" + two(Math.floor(s / 60) % 60) + ":" + two(s % 60);
  }
  function add(m) {
    if (m.seq <= last) return;
    last = m.seq;
    var empty = document.getElementById("trace-empty");
    if (empty) empty.remove();
    var li = document.createElement("li"), details = document.createElement("details");
    var summary = document.createElement("summary"), strong = document.createElement("strong");
    var pre = document.createElement("pre");
    li.setAttribute("data-seq", String(m.seq));
    li.className = m.direction === "in" ? "in" : "out";
    summary.textContent = clock(m.at_ms) + " " + (m.direction === "in" ? "\u2190 " : "\u2192 ") +
      m.peer + " " + m.transport + " \u00b7 ";
    strong.textContent = m.first_line;
    summary.appendChild(strong);
    pre.className = "output";
    // As the server renders it (pages::trace_text): LF line ends, no line breaks
    // after the last line (they would show as blank lines under the message).
    pre.textContent = m.text.replace(/\r\n/g, "\n").replace(/[\r\n]+$/, "");
    details.appendChild(summary);
    details.appendChild(pre);
    li.appendChild(details);
    list.appendChild(li);
    while (list.children.length > 500) list.removeChild(list.firstChild);
  }
  var url = "/api/v1/events/sip-trace?filter=" + encodeURIComponent(list.getAttribute("data-sip-trace"));
  var source = new EventSource(url);
  source.addEventListener("message", function (e) {
    try { add(JSON.parse(e.data)); } catch (err) { /* a broken event is skipped */ }
  });
  source.addEventListener("lagged", function () {
    var li = document.createElement("li");
    li.className = "muted";
    li.textContent = "(some messages went by too fast to show here)";
    list.appendChild(li);
  });
})();
