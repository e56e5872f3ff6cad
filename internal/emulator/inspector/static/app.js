// Live updates for the inspector's pages, from the server-sent event
// stream at /stream (same origin, the session cookie goes along).
(function () {
  "use strict";
  var page = document.body.dataset.page;
  var device = document.body.dataset.device;
  var module = document.body.dataset.module;

  function listen(query, onEvent) {
    var src = new EventSource("/stream?" + query);
    src.onmessage = function (m) { onEvent(JSON.parse(m.data)); };
    // data-live tells a reader (and the tests) that updates now arrive.
    src.onopen = function () { document.body.dataset.live = "yes"; };
    src.onerror = function () { delete document.body.dataset.live; };
    src.addEventListener("dropped", function (m) {
      var el = document.getElementById("dropped");
      if (el) {
        el.hidden = false;
        el.textContent = m.data + " events were missed: this page read too slowly.";
      }
    });
    return src;
  }

  function identityQuery() {
    return "device=" + encodeURIComponent(device) + "&module=" + encodeURIComponent(module || "");
  }

  // refresh replaces an element's content with a fragment the server renders.
  function refresh(url, id, then) {
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.text() : Promise.reject(r.status);
    }).then(function (html) {
      document.getElementById(id).innerHTML = html;
      if (then) { then(); }
    }, function () {});
  }

  function cell(row, text, pre) {
    var td = document.createElement("td");
    if (pre) {
      var p = document.createElement("pre");
      p.textContent = text;
      td.appendChild(p);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function time(iso) {
    var d = new Date(iso);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function props(m) {
    return Object.keys(m || {}).sort().map(function (k) { return k + "=" + m[k]; }).join("\n");
  }

  function body(b64) {
    var bin = atob(b64 || "");
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (e) {
      return "(" + bytes.length + " bytes of binary data)";
    }
  }

  function who(e) { return (e.deviceId || "") + (e.moduleId ? "/" + e.moduleId : ""); }

  function details(e) {
    if (e.message) { return body(e.message.body); }
    if (e.connection) { return e.connection.transport + " " + e.connection.remote + (e.connection.reason ? " (" + e.connection.reason + ")" : ""); }
    if (e.twin) { return e.twin.section + " $version " + e.twin.version + " " + JSON.stringify(e.twin.patch); }
    if (e.registry) { return e.registry.operation; }
    if (e.request) { return e.request.method + " " + e.request.path + " " + e.request.status + " " + e.request.durationMs.toFixed(1) + " ms"; }
    if (e.method) { return e.method.name + " status " + e.method.status + (e.method.error ? " (" + e.method.error + ")" : ""); }
    return "";
  }

  if (page === "identities") {
    listen("kind=registry,connected,disconnected", function () {
      refresh("/?fragment=1", "identities");
    });
  } else if (page === "twin") {
    listen("kind=twin,registry&" + identityQuery(), function () {
      refresh("/twin?" + identityQuery() + "&fragment=1", "twin-panes", function () {
        var etag = document.getElementById("twin-etag").dataset.etag;
        document.getElementById("etag").value = etag;
        document.getElementById("etag-shown").textContent = etag;
      });
    });
  } else if (page === "telemetry") {
    listen("kind=message&" + identityQuery(), function (e) {
      var row = document.createElement("tr");
      row.className = "msg";
      cell(row, time(e.message.enqueuedTime));
      cell(row, body(e.message.body), true);
      cell(row, props(e.message.systemProperties), true);
      cell(row, props(e.message.applicationProperties), true);
      var tbody = document.getElementById("messages");
      tbody.insertBefore(row, tbody.firstChild);
    });
  } else if (page === "events") {
    var q = new URLSearchParams(location.search);
    var query = new URLSearchParams();
    q.getAll("kind").forEach(function (k) { query.append("kind", k); });
    if (q.get("device")) { query.set("device", q.get("device")); }
    if (q.get("module")) { query.set("module", q.get("module")); }
    listen(query.toString(), function (e) {
      var row = document.createElement("tr");
      row.className = "event " + e.kind;
      cell(row, time(e.time));
      cell(row, e.kind);
      cell(row, who(e));
      cell(row, details(e), true);
      var tbody = document.getElementById("events");
      tbody.insertBefore(row, tbody.firstChild);
      while (tbody.rows.length > 500) { tbody.deleteRow(-1); }
    });
  }
})();
