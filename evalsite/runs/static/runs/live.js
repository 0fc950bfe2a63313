// A run's page follows the run while it is queued or running: it polls the run's progress
// (evalsite/runs/views.py) and updates the status, progress bar, progress text and error in
// place; it stops when the run ends. Any page may use it: an element #run-live with
// data-progress-url and data-active="1", and elements marked as below.
(function () {
  "use strict";
  var live = document.getElementById("run-live");
  if (!live || live.dataset.active !== "1") return;
  var url = live.dataset.progressUrl;
  var every = parseInt(live.dataset.interval || "2000", 10);

  // The admin's read-only fields (div.field-<name> .readonly) and the staff pages' own marks.
  function all(selector) {
    return Array.prototype.slice.call(document.querySelectorAll(selector));
  }
  function setText(name, value) {
    all(".field-" + name + " .readonly, [data-run-field='" + name + "']").forEach(function (el) {
      el.textContent = value;
    });
  }
  function update(run) {
    setText("status", run.status);
    setText("error", run.error || "-");
    all("progress.run-progress").forEach(function (bar) {
      bar.max = run.total;
      bar.value = run.done;
    });
    all(".run-progress-text").forEach(function (el) {
      el.textContent = run.text;
    });
    all("img[data-run-live]").forEach(function (img) {
      img.src = img.src.split("?")[0] + "?done=" + run.done;
    });
    live.dataset.status = run.status;
    live.dataset.done = String(run.done);
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.json();
      })
      .then(function (run) {
        update(run);
        if (run.active) {
          window.setTimeout(poll, every);
        } else {
          live.dataset.active = "0";
          live.textContent = live.dataset.endedText;
        }
      })
      .catch(function () {
        // A network blip or a restart: try again a little later.
        window.setTimeout(poll, every * 3);
      });
  }
  window.setTimeout(poll, every);
})();
