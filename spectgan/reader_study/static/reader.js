// The reading page: one case at a time; keys 1/2 answer, then 1-5 confidence, Enter next.
"use strict";

const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const api = `/api/${encodeURIComponent(token)}`;
const $ = (id) => document.getElementById(id);
let state = null;       // the server's state: phase, index, total, case, practice_total, csrf
let answer = null;      // "real" | "synthetic"
let confidence = null;  // 1..5
let shownAt = 0;        // performance.now() when the image was on screen
let pending = null;     // after a practice answer: the next state, shown on Enter

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadState() {
  const response = await fetch(`${api}/state`, {credentials: "same-origin"});
  if (!response.ok) {
    showError(response.status === 403 ? "This link is not valid." : `Error ${response.status}`);
    return;
  }
  render(await response.json());
}

function render(next) {
  state = next;
  pending = null;
  answer = confidence = null;
  $("feedback").hidden = true;
  $("reason").value = "";
  $("reason").blur();  // keys answer the next case, not the text box
  showError("");
  if (state.phase === "done") {
    $("reading").hidden = true;
    $("done").hidden = false;
    $("progress-text").textContent = `Done: ${state.total} of ${state.total} cases answered`;
    $("progress").value = 1;
    return;
  }
  $("reading").hidden = false;
  $("done").hidden = true;
  const practice = state.phase === "practice";
  $("progress-text").textContent = practice
    ? `Practice case ${state.index + 1} of ${state.total} (you are told the answer; not counted)`
    : `Case ${state.index + 1} of ${state.total}`;
  $("progress").max = state.total;
  $("progress").value = state.index;
  $("case-caption").textContent = practice ? "practice" : "";
  const image = $("case-image");
  image.onload = () => { shownAt = performance.now(); };
  image.src = `${api}/image/${encodeURIComponent(state.case)}.png`;
  update();
}

function update() {
  document.querySelectorAll(".choice").forEach((b) => b.classList.toggle("selected", b.dataset.answer === answer));
  document.querySelectorAll(".confidence").forEach((b) =>
    b.classList.toggle("selected", Number(b.dataset.confidence) === confidence));
  $("step-answer").className = "step " + (answer ? "complete" : "active");
  $("step-confidence").className = "step " + (!answer ? "" : confidence ? "complete" : "active");
  $("step-reason").className = "step " + (answer && confidence ? "active" : "");
  $("next").disabled = !(pending || (answer && confidence));
  $("next").innerHTML = pending ? "<kbd>Enter</kbd> Continue" : "<kbd>Enter</kbd> Next";
}

async function submit() {
  if (pending) { render(pending); return; }
  if (!answer || !confidence) return;
  const body = {case: state.case, answer, confidence, reason: $("reason").value,
                seconds: Math.max(0, (performance.now() - shownAt) / 1000)};
  $("next").disabled = true;
  const response = await fetch(`${api}/answer`, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": state.csrf},
    body: JSON.stringify(body),
  });
  if (response.status === 409) { await loadState(); return; }
  if (!response.ok) { showError(`Not saved (error ${response.status}); try again.`); update(); return; }
  const result = await response.json();
  if (result.feedback) {
    pending = result.state;
    const {truth, correct} = result.feedback;
    $("feedback").textContent = `${correct ? "Correct" : "Not quite"}: this slice was ${truth}.`;
    $("feedback").className = correct ? "correct" : "wrong";
    $("feedback").hidden = false;
    update();
  } else {
    render(result.state);
  }
}

function onKey(event) {
  if (!state || state.phase === "done") return;
  if (event.key === "Enter") { event.preventDefault(); submit(); return; }
  if (event.target === $("reason") || pending) return;
  if (event.key === "Backspace") { answer = confidence = null; update(); return; }
  const digit = Number(event.key);
  if (!answer && (digit === 1 || digit === 2)) answer = digit === 1 ? "real" : "synthetic";
  else if (answer && digit >= 1 && digit <= 5) confidence = digit;
  else return;
  event.preventDefault();
  update();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".choice").forEach((b) => b.addEventListener("click", () => {
    if (!pending) { answer = b.dataset.answer; update(); }
  }));
  document.querySelectorAll(".confidence").forEach((b) => b.addEventListener("click", () => {
    if (!pending && answer) { confidence = Number(b.dataset.confidence); update(); }
  }));
  $("next").addEventListener("click", submit);
  document.addEventListener("keydown", onKey);
  loadState();
});
