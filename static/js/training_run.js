// Loss and dev-metric curves of a training run (admin run page). The data sits in the
// #run-series JSON block of the htmx-polled fragment; after each swap the charts update in place.
(function () {
  "use strict";
  var charts = {};
  var palette = ["#2457c5", "#c0392b", "#1f7a3a", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#2c3e50"];

  function readSeries() {
    var node = document.getElementById("run-series");
    return node ? JSON.parse(node.textContent) : null;
  }

  function datasets(map) {
    return Object.keys(map).map(function (name, i) {
      return { label: name, data: map[name], borderColor: palette[i % palette.length],
               backgroundColor: palette[i % palette.length], tension: 0.2, spanGaps: true };
    });
  }

  function draw(id, labels, map) {
    var canvas = document.getElementById(id);
    if (!canvas || typeof Chart === "undefined") { return; }
    if (charts[id]) {
      charts[id].data.labels = labels;
      charts[id].data.datasets = datasets(map);
      charts[id].update("none");
      return;
    }
    charts[id] = new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: datasets(map) },
      options: { animation: false, responsive: true, scales: { x: { title: { display: true, text: "epoch" } } } }
    });
  }

  function refresh() {
    var s = readSeries();
    if (!s) { return; }
    draw("chart-loss", s.epochs, s.losses);
    draw("chart-dev", s.epochs, s.dev);
    var rewards = s.rewards || {};
    var figure = document.getElementById("figure-reward");
    if (figure && Object.keys(rewards).length) {
      figure.hidden = false;  // only runs with a self-critical phase have these curves
      draw("chart-reward", s.epochs, rewards);
    }
  }

  document.addEventListener("DOMContentLoaded", refresh);
  document.addEventListener("htmx:afterSettle", refresh);
})();
