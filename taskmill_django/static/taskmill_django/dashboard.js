/* Keeps the taskmill dashboard live: polls the dashboard's JSON view and swaps in the panels
   it renders (numbers, progress bars and SVG charts are all drawn on the server). No build
   step and no dependencies. Polling stops while the tab is hidden and backs off on errors. */
(function () {
  "use strict";

  var root = document.getElementById("tm-dashboard");
  if (!root || !window.fetch) {
    return;
  }
  var url = root.getAttribute("data-url");
  var every = (parseFloat(root.getAttribute("data-refresh")) || 5) * 1000;
  var status = document.getElementById("tm-live");
  var toggle = document.getElementById("tm-live-toggle");
  var timer = null;
  var failures = 0;
  var stopped = false;
  var inFlight = false;
  var last = {};

  function say(text, css) {
    status.textContent = text;
    status.className = "tm-live" + (css ? " " + css : "");
  }

  function apply(payload) {
    var panels = payload.panels || {};
    Object.keys(panels).forEach(function (name) {
      if (last[name] === panels[name]) {
        return;
      }
      var target = root.querySelector('[data-panel="' + name + '"]');
      if (target) {
        target.innerHTML = panels[name];
        last[name] = panels[name];
      }
    });
    if (payload.data && payload.data.generated_at) {
      root.setAttribute("data-generated-at", payload.data.generated_at);
    }
  }

  function schedule(delay) {
    window.clearTimeout(timer);
    if (!stopped && !document.hidden) {
      timer = window.setTimeout(poll, delay);
    }
  }

  function poll() {
    if (inFlight) {
      return;
    }
    inFlight = true;
    fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" }
    })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("application/json") === -1) {
          throw new Error(response.ok ? "signed out?" : "HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (payload) {
        apply(payload);
        failures = 0;
        say("Updated " + (payload.clock || new Date().toLocaleTimeString()));
      })
      .catch(function (error) {
        failures += 1;
        say("Update failed (" + error.message + "), retrying", "tm-stale");
      })
      .then(function () {
        inFlight = false;
        schedule(Math.min(every * Math.pow(2, Math.min(failures, 4)), 60000));
      });
  }

  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    stopped = !stopped;
    toggle.textContent = stopped ? "Resume updates" : "Pause updates";
    if (stopped) {
      window.clearTimeout(timer);
      say("Updates paused", "tm-off");
    } else {
      poll();
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
    } else if (!stopped) {
      poll();
    }
  });

  schedule(every);
})();
