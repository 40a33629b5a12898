// mailconduit console: a few progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Port suggestions: a chip (or typing a well-known port) fills the port and the matching security.
  function setupPorts() {
    var port = document.getElementById("f-port");
    if (!port) { return; }
    var security = document.getElementById("f-security");
    var useSsl = document.getElementById("f-use_ssl");
    var hint = document.getElementById("port-hint");
    var hints = {};
    try {
      JSON.parse(port.getAttribute("data-port-hints") || "[]").forEach(function (pair) { hints[String(pair[0])] = pair[1]; });
    } catch (e) { hints = {}; }
    var words = { tls: "TLS from the first byte (implicit TLS)", starttls: "STARTTLS (upgrade to TLS after the greeting)", none: "no encryption" };

    function suggest(value, fromChip) {
      var sec = hints[String(value)];
      if (!sec) { if (hint) { hint.textContent = ""; } return; }
      if (security) { security.value = sec; }
      if (useSsl) { useSsl.checked = sec !== "none"; }
      if (hint) { hint.textContent = "Port " + value + " usually means " + words[sec] + "; security set to " + sec + "."; }
      if (fromChip) { port.value = value; port.focus(); }
    }
    port.addEventListener("change", function () { suggest(port.value, false); });
    document.querySelectorAll(".chip[data-port]").forEach(function (chip) {
      chip.addEventListener("click", function () { suggest(chip.getAttribute("data-port"), true); });
    });
    if (security && useSsl) {
      security.addEventListener("change", function () {
        if (security.value) { useSsl.checked = security.value !== "none"; }
      });
      useSsl.addEventListener("change", function () { security.value = ""; });
    }
  }

  // Provider presets: choosing one fills the fields it knows; each stays editable.
  function setupPresets() {
    var select = document.getElementById("f-preset");
    if (!select) { return; }
    var presets = {};
    try { presets = JSON.parse(select.getAttribute("data-presets") || "{}"); } catch (e) { presets = {}; }
    select.addEventListener("change", function () {
      var fields = presets[select.value];
      if (!fields) { return; }
      Object.keys(fields).forEach(function (name) {
        var input = document.getElementById("f-" + name);
        if (!input) { return; }
        if (input.type === "checkbox") { input.checked = Boolean(fields[name]); }
        else { input.value = String(fields[name]); }
      });
      var oauth = document.getElementById("oauth-settings");
      if (oauth && fields.oauth_provider) { oauth.open = true; }
    });
  }

  // Live progress: replace the status fragment every second until the run has ended.
  function setupPolling() {
    var box = document.querySelector("[data-poll]");
    if (!box || !window.fetch) { return; }
    var url = box.getAttribute("data-poll");
    var failures = 0;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          failures = 0;
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("#run-status");
          if (!fresh) { throw new Error("no status"); }
          var old = box.querySelector("#run-status");
          box.replaceChild(fresh, old);
          if (fresh.hasAttribute("data-final")) {
            window.location.replace(window.location.pathname);
            return;
          }
          window.setTimeout(tick, 1000);
        })
        .catch(function () {
          failures += 1;
          if (failures < 30) { window.setTimeout(tick, 2000); }
        });
    }
    window.setTimeout(tick, 1000);
  }

  function setupBackLinks() {
    document.querySelectorAll("a[data-back]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
      });
    });
  }

  // Keep the CSRF token available to scripts that call the API with the session cookie.
  window.mailconduit = { csrfToken: csrfToken };

  document.addEventListener("DOMContentLoaded", function () {
    setupPorts();
    setupPresets();
    setupPolling();
    setupBackLinks();
  });
}());
