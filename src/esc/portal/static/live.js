// The pair's card, kept current by server-sent events (/live). After a failover the
// stream breaks or goes quiet: it is opened again (through the VIP, so on the new
// active; the session is in the replicated database), and after a few failures the
// page is loaded again, which leads to the login page if the session has ended.
(function () {
  "use strict";
  var source = null, last = 0, failures = 0;
  function state(text) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; }
  }
  function open() {
    var pair = document.getElementById("pair");
    if (!pair || !pair.dataset.live) { return; }
    if (source) { source.close(); }
    source = new EventSource(pair.dataset.live);
    last = Date.now();
    source.addEventListener("pair", function (e) {
      var target = document.getElementById("pair");
      if (target) { target.innerHTML = e.data; }
      last = Date.now(); failures = 0; state("live");
    });
    source.onerror = function () { state("reconnecting"); };
  }
  setInterval(function () {
    if (!document.getElementById("pair")) {
      if (source) { source.close(); source = null; }
      return;
    }
    if (!source || Date.now() - last > 3000) {
      failures += 1;
      if (failures > 5) { window.location.reload(); return; }
      state("reconnecting");
      open();
    }
  }, 1000);
  document.addEventListener("DOMContentLoaded", open);
  document.addEventListener("htmx:afterSettle", function () {
    if (document.getElementById("pair") && !source) { open(); }
  });
})();
