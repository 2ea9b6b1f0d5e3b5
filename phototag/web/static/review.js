// Review mode: one photo at a time, one keystroke per decision (no build step, no framework).
// Without this script the page still works: its buttons are forms that post and go to the next photo.
(function () {
  "use strict";

  function start() {
    var root = document.getElementById("review");
    if (!root) return;
    var data = JSON.parse(root.getAttribute("data-review") || "{}");
    var items = data.items || [];
    var index = data.start || 0;
    var preloaded = {};

    function el(id) { return document.getElementById(id); }

    function post(url, fields) {
      var body = new URLSearchParams();
      body.set("csrf", data.csrf);
      Object.keys(fields).forEach(function (k) { body.set(k, fields[k]); });
      return fetch(url, {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRF-Token": data.csrf }
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (json) {
          if (!response.ok) throw new Error(json.error || ("the server answered " + response.status));
          return json;
        });
      });
    }

    function preload(i) {
      if (i < 0 || i >= items.length || preloaded[i]) return;
      preloaded[i] = new Image();
      preloaded[i].src = "/photos/" + items[i].id + "/preview";
    }

    function decidedCount() {
      return items.filter(function (it) { return it.state !== "pending"; }).length;
    }

    function show(i) {
      if (!items.length) return;
      index = Math.max(0, Math.min(i, items.length - 1));
      var item = items[index];
      var img = el("review-image");
      img.src = "/photos/" + item.id + "/preview";
      img.alt = item.name;
      el("review-link").href = "/photos/" + item.id;
      el("review-name").textContent = item.name;
      el("review-score").textContent = item.score === null ? "tagged by hand" : "score " + item.score.toFixed(3);
      var state = el("review-state");
      state.textContent = item.state;
      state.className = "review-state state-" + item.state;
      el("review-card").setAttribute("data-state", item.state);
      el("review-position").textContent = (index + 1) + " / " + items.length;
      var decided = decidedCount();
      el("review-decided").textContent = decided;
      el("review-progress").value = decided;
      document.querySelectorAll(".review-actions input[name=photo_id]").forEach(function (input) {
        input.value = item.id;
      });
      var base = "/review?tag=" + encodeURIComponent(data.tag) + "&i=";
      el("review-prev").href = base + Math.max(index - 1, 0);
      el("review-next").href = base + Math.min(index + 1, items.length - 1);
      if (window.history && history.replaceState) history.replaceState(null, "", base + index);
      preload(index + 1);
      preload(index + 2);
    }

    // a decision shows at once and the next photo comes; the saves go to the server one after
    // another behind it (a fast reviewer never waits for the network). A save that fails puts the
    // photo back as it was and says why.
    var queue = [];
    var saving = false;

    function setSaving() {
      var waiting = queue.length + (saving ? 1 : 0);
      root.setAttribute("data-saving", String(waiting));
      var note = el("review-saving");
      if (note) note.textContent = waiting ? " · saving " + waiting + "…" : "";
    }

    function decide(decision) {
      if (!items.length) return;
      var item = items[index];
      queue.push({ item: item, decision: decision, before: item.state });
      item.state = decision === "accept" ? "accepted" : "rejected";
      setSaving();
      show(index + 1 < items.length ? index + 1 : index);
      if (index === items.length - 1 && decidedCount() === items.length) {
        el("review-state").textContent = items[index].state + " · all " + items.length + " decided";
      }
      saveNext();
    }

    function saveNext() {
      if (saving || !queue.length) return;
      var job = queue.shift();
      saving = true;
      setSaving();
      post("/review/decide", { tag: data.tag, photo_id: job.item.id, decision: job.decision })
        .then(function (result) {
          job.item.state = result.state;
          setWaiting(result.corrections);
        })
        .catch(function (error) {
          job.item.state = job.before;
          show(items.indexOf(job.item));
          flash(job.item.name + " not saved: " + error.message);
        })
        .then(function () {
          saving = false;
          setSaving();
          if (items[index] === job.item && !el("review-state").classList.contains("state-error")) show(index);
          saveNext();
        });
    }

    function flash(text) {
      var state = el("review-state");
      if (!state) { alert(text); return; }
      state.textContent = text;
      state.className = "review-state state-error";
    }

    function setWaiting(counts) {
      if (!counts || !el("learn-waiting")) return;
      el("learn-waiting").textContent = counts.waiting;
      el("learn-total").textContent = counts.total;
      el("learn-last").textContent = counts.last_learned ? "last learned " + counts.last_learned + " UTC" : "never learned from yet";
    }

    // ---- learning jobs --------------------------------------------------------------------
    var polling = null;

    function showJob(job) {
      var box = el("learn-job");
      if (!job) { box.hidden = true; return; }
      box.hidden = false;
      el("learn-job-kind").textContent = job.kind;
      el("learn-job-state").textContent = job.state + " (" + job.seconds + " s)";
      var bar = el("learn-job-progress");
      if (job.total) { bar.max = job.total; bar.value = job.done; }
      else if (job.state !== "running") { bar.max = 1; bar.value = 1; }
      else { bar.removeAttribute("value"); }
      var message = job.message || "";
      if (job.state === "running" && !message) {
        message = job.total ? "running the model on " + job.total + " corrected photos" : "loading the model…";
      }
      el("learn-job-message").textContent = message;
      var running = job.state === "running";
      el("learn-calibrate").disabled = running;
      el("learn-finetune").disabled = running;
    }

    function poll() {
      fetch("/review/job", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (status) {
          showJob(status.job);
          setWaiting(status.corrections);
          if (!status.job || status.job.state !== "running") { clearInterval(polling); polling = null; }
        })
        .catch(function () { clearInterval(polling); polling = null; });
    }

    function startPolling() {
      if (!polling) polling = setInterval(poll, 1000);
    }

    document.querySelectorAll("form[action='/review/learn']").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var kind = event.submitter ? event.submitter.value : form.querySelector("button").value;
        post("/review/learn", { kind: kind, tag: data.tag })
          .then(function (job) { showJob(job); startPolling(); })
          .catch(function (error) { el("learn-job").hidden = false; el("learn-job-message").textContent = error.message; });
      });
    });
    if (data.job && data.job.state === "running") startPolling();

    // ---- decisions: buttons and keys -------------------------------------------------------
    document.querySelectorAll(".review-actions form[data-decision]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        decide(form.getAttribute("data-decision"));
      });
    });
    ["review-prev", "review-next"].forEach(function (id) {
      var link = el(id);
      if (!link) return;
      link.addEventListener("click", function (event) {
        event.preventDefault();
        show(index + (id === "review-prev" ? -1 : 1));
      });
    });

    document.addEventListener("keydown", function (event) {
      if (!items.length || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      var target = event.target;
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
      var key = event.key;
      if (key === "a" || key === "A") decide("accept");
      else if (key === "r" || key === "R" || key === "x" || key === "X" || key === "Delete" || key === "Backspace") decide("reject");
      else if (key === "ArrowRight" || key === "j") show(index + 1);
      else if (key === "ArrowLeft" || key === "k") show(index - 1);
      else return;
      event.preventDefault();
    });

    if (items.length) { preload(index + 1); preload(index + 2); }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
