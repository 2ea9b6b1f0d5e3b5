// phototag serve: tag suggestions while typing (the one <datalist> of base.html, fed by /api/tags).
// No inline scripts anywhere: the Content-Security-Policy allows only this file and review.js.
"use strict";
(function () {
  const list = document.getElementById("tag-suggestions");
  if (!list) return;
  let timer = null;
  let last = null;

  function lastWord(value) {
    const m = /(^|[\s,])([^\s,]*)$/.exec(value);
    return m ? m[2] : "";
  }

  async function suggest(input) {
    const value = input.value;
    const word = lastWord(value).replace(/^[\^=]/, "").replace(/^tag:/, "");
    if (word.length < 1 || word.includes(":") || word === last) return;
    last = word;
    const response = await fetch("/api/tags?prefix=" + encodeURIComponent(word), { credentials: "same-origin" });
    if (!response.ok) return;
    const tags = await response.json();
    const head = value.slice(0, value.length - lastWord(value).length);
    const prefix = lastWord(value).slice(0, lastWord(value).length - word.length);
    list.replaceChildren(...tags.map(function (tag) {
      const option = document.createElement("option");
      option.value = input.name === "q" ? head + prefix + tag.name : tag.name;
      option.label = tag.name + (tag.name_zh ? " " + tag.name_zh : "") + " (" + tag.count + ")";
      return option;
    }));
  }

  document.querySelectorAll("input[data-suggest]").forEach(function (input) {
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { suggest(input); }, 120);
    });
  });
})();

// the photo page: ← and → go to the previous and next photo of the result set
(function () {
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (event.target.closest && event.target.closest("input, textarea, select, button, [contenteditable]")) return;
    const link = event.key === "ArrowLeft" ? document.getElementById("prev")
      : event.key === "ArrowRight" ? document.getElementById("next") : null;
    if (link) window.location.assign(link.href);
  });
})();
