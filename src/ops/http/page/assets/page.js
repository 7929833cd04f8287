// breach-notifier status page: refreshes the part of the page marked data-live every few seconds,
// only while the tab is visible, backing off when the server does not answer. Without this script
// the page is complete; it just does not move until reloaded.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.live) {
    return;
  }
  var url = live.dataset.live;
  var every = 2000;
  var timer = null;
  var failures = 0;

  function schedule(ms) {
    clearTimeout(timer);
    if (!document.hidden) {
      timer = setTimeout(refresh, ms);
    }
  }

  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        live.dataset.updatedAt = String(Date.now());
        delete live.dataset.stale;
        failures = 0;
        schedule(every);
      })
      .catch(function () {
        failures += 1;
        live.dataset.stale = "1";
        schedule(Math.min(every * Math.pow(2, failures), 60000));
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      clearTimeout(timer);
    } else {
      refresh();
    }
  });
  schedule(every);
})();
