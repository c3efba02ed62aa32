// Live "contacts matching now" on the campaign form: asks the server as the filter is typed.
"use strict";
window.addEventListener("load", function () {
  const filter = document.getElementById("id_contact_filter");
  const workspace = document.getElementById("id_workspace");
  if (!filter) return;
  let out = document.getElementById("match-count");
  if (!out) {
    out = document.createElement("div");
    out.id = "match-count";
    out.setAttribute("aria-live", "polite");
    filter.parentNode.appendChild(out);
  }
  const url = window.location.pathname.replace(/\/(add|\d+\/change)\/?$/, "/match-count/");
  let timer = null;
  function refresh() {
    const params = new URLSearchParams({ filter: filter.value, workspace: workspace ? workspace.value : "" });
    fetch(url + "?" + params.toString(), { credentials: "same-origin" })
      .then((r) => r.json())
      .then((body) => {
        out.textContent = body.error
          ? body.error
          : body.matching + " contacts match, " + body.subscribed + " of them subscribed.";
      })
      .catch(() => {});
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }
  filter.addEventListener("input", schedule);
  if (workspace) workspace.addEventListener("change", schedule);
});
