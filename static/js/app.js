// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // Times arrive in UTC; show them in the viewer's timezone, UTC stays on hover.
  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
      });
      if (!el.title) el.title = d.toISOString();
    });
  }

  document.addEventListener("submit", function (ev) {
    var button = ev.submitter;
    var message = button && button.getAttribute("data-confirm");
    if (message && !window.confirm(message)) ev.preventDefault();
  });

  document.addEventListener("change", function (ev) {
    if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
  });

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });

  // "Try it" on an endpoint script's page: a real request with the session and CSRF token.
  document.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form[data-try-endpoint]");
    if (!form) return;
    ev.preventDefault();
    var out = document.getElementById("try-output");
    var method = form.getAttribute("data-method");
    // Each {parameter} of the route takes the value typed in its own field.
    var path = form.getAttribute("data-path").replace(/\{(\w+)\}/g, function (_, name) {
      return encodeURIComponent(form.querySelector('[data-param="' + name + '"]').value.trim());
    });
    var query = form.elements.query.value.trim().replace(/^\?/, "");
    var url = "/api/scripts" + path + (query ? "?" + query : "");
    var options = { method: method, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() } };
    if (form.elements.body && form.elements.body.value.trim()) {
      options.headers["Content-Type"] = "application/json";
      options.body = form.elements.body.value;
    }
    out.textContent = "Sending " + method + " " + url + " …";
    fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        out.textContent = "";
        var status = document.createElement("p");
        status.className = "try-status " + (response.ok ? "ok" : "failed");
        status.textContent = "HTTP " + response.status + " " + response.statusText;
        out.appendChild(status);
        var headers = document.createElement("pre");
        headers.className = "try-headers";
        response.headers.forEach(function (value, name) { headers.textContent += name + ": " + value + "\n"; });
        out.appendChild(headers);
        var body = document.createElement("pre");
        body.className = "try-body";
        body.textContent = text;
        out.appendChild(body);
      });
    }).catch(function (err) { out.textContent = "The request failed: " + err; });
  });

  // A type switch on the script form may bring the new type's starter source
  // (scripts/_trigger_fields.html); CodeMirror's wrapper follows the textarea it replaced.
  function applyStarter() {
    var starter = document.querySelector("template[data-starter-source]");
    var source = document.getElementById("source");
    if (!starter || !source) return;
    var text = starter.content.textContent;
    starter.remove();
    source.value = text;
    var editor = source.nextElementSibling && source.nextElementSibling.CodeMirror;
    if (editor) editor.setValue(text);
  }

  // Live parts (templates/_live.html) poll their URL. A hidden tab asks for nothing (it asks
  // once it is shown again); an answer with the digest already shown is not swapped in.
  function livePart(el) { return el && el.hasAttribute && el.hasAttribute("data-live"); }

  document.addEventListener("htmx:confirm", function (ev) {
    if (document.hidden && livePart(ev.target)) ev.preventDefault();
  });

  document.addEventListener("htmx:beforeSwap", function (ev) {
    var target = ev.detail.target;
    if (!livePart(target) || !ev.detail.shouldSwap) return;
    var digest = /data-digest="([0-9a-f]+)"/.exec(ev.detail.serverResponse || "");
    if (digest && digest[1] === target.getAttribute("data-digest")) ev.detail.shouldSwap = false;
  });

  document.addEventListener("DOMContentLoaded", function () { localizeTimes(document); });
  document.addEventListener("htmx:afterSwap", function (ev) { localizeTimes(ev.target); applyStarter(); });
})();
