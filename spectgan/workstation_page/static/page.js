// The spectgan page: request synthetic slices over a reference study, review them with their hemisphere statistics,
// download the table and export chosen results to the PACS. Everything the page offers comes from the server: the
// studies (its datastore), the models and the conditions each allows (GET /info/); nothing is copied here. The Models
// panel shows each model's versions as the server lists them (GET /models/{model}/versions: version, sha256, cohort,
// evaluation summary, a link to the full report) and the latest training (read again while it runs).
// On a server with an API token the page first asks for it (a login form): the server answers a session cookie that
// authorises the page's calls and OHIF's; the page keeps no token.
"use strict";

const API = "/spectgan/api";
const CANVAS_PX = 224;               // drawn size of a slice (CSS pixels, the canvas holds 2x for sharp outlines)
const CANVAS_SCALE = 2;
const MAX_REQUESTS = 200;            // slices per Generate
const ROBUST_PEAK_PERCENTILE = 99.5; // the grey scale's top: this percentile of a slice's positive counts
const REGION_COLOURS = { 1: "#ff7f0e", 2: "#3d9bff" };  // patient left, right (the overview's, right lighter)
// The CSV's columns before the statistics (which the server declares: GET /spectgan/api/config) and after them.
const CSV_COLUMNS = ["study", "model", "version", "sha256", "level", "pattern", "side", "territory", "severity", "seed",
                     "psi", "base"];
const CSV_TAIL = ["size_unit", "stats_error"];
const SHA256_SHOWN = 12;             // hex digits of a version's sha256 the Models panel shows
const TRAINING_POLL_MS = 2000;       // how often the state of a running training is read again

const state = { models: {}, results: [], conditions: [], peak: 0, run: null, busy: false, config: {},
                trainingTimer: null };
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------------------- errors

class PageError extends Error {}

// A call refused for want of a login (HTTP 401): the page shows its login form with the server's reason (the
// message), e.g. a wrong token or an expired session.
class LoginRequired extends PageError {}

// The server's own explanation of a failed request ("" when it gave none).
async function serverDetail(response) {
  try {
    const body = await response.clone().json();
    return typeof body.detail === "string" ? body.detail
      : Array.isArray(body.detail) ? body.detail.map((item) => item.msg || JSON.stringify(item)).join("; ")
      : JSON.stringify(body);
  } catch (error) {
    return (await response.text()).trim().slice(0, 300);
  }
}

// A readable message for a failed request: the server's own explanation when it gave one.
async function describeFailure(response, what) {
  const detail = await serverDetail(response);
  const status = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
  if (response.status === 503 || response.status === 429) {
    return `${what}: the server is busy or a service it needs is unavailable (${status}). ${detail || "Try again in a moment."}`;
  }
  return `${what} was refused (${status}): ${detail || "no explanation given"}`;
}

async function call(path, what, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new PageError(`${what}: cannot reach the spectgan server (${error.message}). Is it running?`);
  }
  if (response.status === 401) {
    throw new LoginRequired(await serverDetail(response) || `${what} needs a login (HTTP 401).`);
  }
  if (!response.ok) {
    throw new PageError(await describeFailure(response, what));
  }
  return response.json();
}

// JSON to one of the page's routes (POST).
function postJson(path, what, body) {
  return call(path, what, { method: "POST", headers: { "Content-Type": "application/json" },
                            body: JSON.stringify(body) });
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function guarded(action) {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      showError("");
      await action(event);
    } catch (error) {
      if (error instanceof LoginRequired) {
        showLogin(error.message);
      } else {
        showError(error instanceof PageError ? error.message : `Unexpected error on the page: ${error.message}`);
      }
    }
  };
}

// ------------------------------------------------------------------------------------------------------ login

function showLogin(message) {
  showError("");
  stopWatchingTraining();
  $("workspace").hidden = $("table-section").hidden = $("models-section").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
  $("token").focus();
}

function hideLogin() {
  $("login").hidden = true;
  $("workspace").hidden = $("table-section").hidden = $("models-section").hidden = false;
}

// Where to go after the login: OHIF's page that sent the browser here (?next=/ohif/...), else this page.
function nextAfterLogin() {
  const next = new URLSearchParams(window.location.search).get("next") || "";
  return /^\/ohif\/[^\\]*$/.test(next) ? next : null;
}

async function login() {
  const field = $("token"), token = field.value.trim();
  field.value = "";  // the page keeps no token: the server's session cookie stands for it
  if (!token) {
    showLogin("Enter the server's API token (ask its administrator).");
    return;
  }
  await postJson(`${API}/login`, "The login", { token });  // a wrong token: LoginRequired, shown on the form
  const next = nextAfterLogin();
  if (next) {
    window.location.assign(next);
    return;
  }
  hideLogin();
  await start();
}

async function logout() {
  await postJson(`${API}/logout`, "The logout", {});
  showLogin("Logged out: the page and OHIF need the token again.");
}

// --------------------------------------------------------------------------------------------- request form

function option(select, value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  select.appendChild(item);
}

function fill(select, values, describe = (value) => value) {
  const previous = select.value;
  select.replaceChildren();
  values.forEach((value) => option(select, value, describe(value)));
  if (values.includes(previous)) select.value = previous;
}

function unique(values) {
  return [...new Set(values)];
}

// The condition controls: one per axis the model declares (/info/ "axes": level, pattern, side, territory, severity
// or any other), built here from the declaration; nothing about a particular axis is written in the page. An axis's
// values may depend on an earlier axis (values_by), and it may apply only for some values of earlier ones
// (applies_when: a side for the sided patterns). An optional axis left empty is drawn by the model.
function axesOf(model) {
  return state.models[model]?.axes || [];
}

function allowedValues(axis, chosen) {
  return axis.values_by ? axis.values_per[chosen[axis.values_by]] || [] : axis.values;
}

function applies(axis, chosen) {
  return Object.entries(axis.applies_when || {}).every(([name, values]) => values.includes(chosen[name]));
}

function axisControl(axis) {
  if (axis.kind === "continuous") {
    const range = `${axis.minimum}-${axis.maximum}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "number", step: "any", min: axis.minimum, max: axis.maximum, autocomplete: "off",
                           placeholder: axis.required ? range : `drawn (${range})` });
    return input;
  }
  const select = document.createElement("select");
  select.addEventListener("change", updateAxisChoices);
  return select;
}

function buildAxisControls() {
  const boxes = axesOf($("model").value).map((axis) => {
    const box = document.createElement("span"), label = document.createElement("label"), control = axisControl(axis);
    box.id = `${axis.name}-box`;
    control.id = label.htmlFor = axis.name;
    label.textContent = axis.name[0].toUpperCase() + axis.name.slice(1).replace(/_/g, " ");
    label.title = [axis.description, axis.unit].filter(Boolean).join("; ");
    box.append(label, control);
    return box;
  });
  $("axes").replaceChildren(...boxes);
  updateAxisChoices();
}

// Each axis offers what the model allows given the axes before it; an axis that does not apply is hidden.
function updateAxisChoices() {
  const chosen = {};
  for (const axis of axesOf($("model").value)) {
    const offered = applies(axis, chosen);
    $(`${axis.name}-box`).hidden = !offered;
    if (!offered) continue;
    if (axis.kind === "categorical") {
      const select = $(axis.name), unchosen = !select.value, allowed = allowedValues(axis, chosen);
      fill(select, [...(axis.required ? [] : [""]), ...allowed], (value) => value || "drawn");
      if (unchosen && allowed.includes(axis.default)) select.value = axis.default;
    }
    chosen[axis.name] = $(axis.name).value;
  }
  updateRemovalChoices(chosen);
}

// The chosen condition: the value of every offered axis that has one, a label such as "BG-unilateral-left
// (MCA 0.2)" (the required axes joined, the optional ones in brackets) and the offered axes left empty (missing).
function selectedCondition() {
  const values = {}, named = [], optional = [], missing = [];
  for (const axis of axesOf($("model").value)) {
    const value = $(`${axis.name}-box`).hidden ? "" : $(axis.name).value.trim();
    if (!value) {
      if (!$(`${axis.name}-box`).hidden) missing.push(axis.name);
      continue;
    }
    values[axis.name] = value;
    (axis.required ? named : optional).push(value);
  }
  const removal = selectedRemoval();
  Object.assign(values, removal.values);
  missing.push(...removal.missing);
  if (removal.text) optional.push(`remove ${removal.text}`);
  const label = named.join("-");
  return { values, missing, label: optional.length ? `${label} (${optional.join(" ")})` : label };
}

// Removing a defect from the patient's own slice: the model's "base" param declares under "removes" when it applies
// (made from the reference, pattern normal) and the params that name the study's defect (side: empty for both
// sides; territory per level; severity and its range). Their controls are built here from that declaration and
// shown while it applies; their values go with the condition.
const removalOf = (model) => baseOf(model)?.removes;

function buildRemovalControls() {
  const spec = removalOf($("model").value);
  const boxes = Object.entries(spec?.params || {}).map(([name, param]) => {
    const box = document.createElement("span"), label = document.createElement("label");
    const control = document.createElement(param.type === "number" ? "input" : "select");
    if (param.type === "number") {
      Object.assign(control, { type: "number", step: "any", min: param.minimum, max: param.maximum,
                               autocomplete: "off", placeholder: `${param.minimum}-${param.maximum}` });
    }
    control.id = label.htmlFor = `remove-${name}`;
    label.textContent = `Remove: ${name}`;
    label.title = [spec.description, param.unit].filter(Boolean).join("; ");
    box.append(label, control);
    return box;
  });
  $("removal").replaceChildren(...boxes);
  $("removal-hint").textContent = spec ? `Made from the reference with a normal pattern: ${spec.description}.` : "";
}

function updateRemovalChoices(chosen) {
  const spec = removalOf($("model").value);
  $("removal-box").hidden = !spec || !applies(spec, { base: $("base").value, ...chosen });
  for (const [name, param] of Object.entries(spec?.params || {})) {
    if (param.type === "number") continue;
    const select = $(`remove-${name}`), previous = select.value;
    const allowed = param.per_level ? param.per_level[chosen.level] || [] : param.allowed;
    fill(select, [...(param.required ? [] : [""]), ...allowed], (value) => value || param.empty);
    if (allowed.includes(previous)) select.value = previous;
  }
}

// The removal params of the chosen condition ({} where no removal applies), those required but left empty
// (missing) and their text for the condition's label.
function selectedRemoval() {
  if ($("removal-box").hidden) return { values: {}, missing: [], text: "" };
  const spec = removalOf($("model").value), removal = {}, missing = [];
  for (const [name, param] of Object.entries(spec.params)) {
    const value = $(`remove-${name}`).value.trim();
    if (value) removal[name] = value;
    else if (param.required) missing.push(`the ${name} of the defect to remove`);
  }
  const text = Object.entries(spec.params).map(([name, param]) => removal[name] || param.empty || "")
    .filter(Boolean).join(" ");
  return { values: removal, missing, text };
}

// The "Made from" choice: the model's declared "base" param (/info/ params: its allowed values, default and
// description), e.g. a new brain from the model or this patient's own slice; hidden for a model without one.
// Made from the patient's slice, "File the export with" offers the model's declared "file_with" param (a synthetic
// patient, or the reference's own study) where it applies.
const baseOf = (model) => state.models[model]?.params?.base;
const fileWithOf = (model) => state.models[model]?.params?.file_with;

function fillChoice(spec, select, hint) {
  const previous = select.value;
  fill(select, spec.allowed);
  if (!spec.allowed.includes(previous)) select.value = spec.default;
  select.title = hint.textContent = spec.description;
}

function buildBaseChoice() {
  const model = $("model").value, spec = baseOf(model), fileWith = fileWithOf(model);
  $("base-box").hidden = !spec;
  buildRemovalControls();
  if (fileWith) fillChoice(fileWith, $("file_with"), $("file-with-hint"));
  if (spec) fillChoice(spec, $("base"), $("base-hint"));
  showFileWith();
}

function showFileWith() {
  const spec = fileWithOf($("model").value);
  $("file-with-box").hidden = !spec || !applies(spec, { base: $("base").value });
}

// The chosen base ({} for a model without the choice), sent with each request. Only the model draws an axis left
// empty: made from anything else (the patient's own slice), every offered axis of each condition needs a value.
function selectedBase(conditions) {
  const spec = baseOf($("model").value);
  if (!spec) return {};
  const base = $("base").value;
  if (base !== spec.default) {
    const incomplete = conditions.find((condition) => condition.missing.length);
    if (incomplete) {
      throw new PageError(`Made from ${base}: ${incomplete.label} needs ${incomplete.missing.join(" and ")} (only ` +
                          `the model draws what is left empty). Choose them, or make it from ${spec.default}.`);
    }
  }
  const filing = $("file-with-box").hidden || $("file_with").value === fileWithOf($("model").value).default ? {}
    : { file_with: $("file_with").value };
  return { base, ...filing };
}

function showConditions() {
  const list = $("conditions");
  list.replaceChildren();
  state.conditions.forEach((condition, index) => {
    const item = document.createElement("li");
    item.textContent = condition.label;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${condition.label}`);
    remove.addEventListener("click", () => { state.conditions.splice(index, 1); showConditions(); });
    item.appendChild(remove);
    list.appendChild(item);
  });
  $("conditions-hint").hidden = state.conditions.length > 0;
}

function addCondition() {
  const condition = selectedCondition();
  if (!state.conditions.some((c) => c.label === condition.label)) state.conditions.push(condition);
  showConditions();
}

// "0-2,7" -> [0, 1, 2, 7]; a PageError names the form.
function parseSeeds(text) {
  const seeds = [];
  for (const item of text.split(",")) {
    const match = item.trim().match(/^(\d+)(?:\s*-\s*(\d+))?$/);
    if (!match || (match[2] !== undefined && Number(match[2]) < Number(match[1]))) {
      throw new PageError(`Invalid seeds "${text}": use whole numbers and ranges such as 0-2,7.`);
    }
    for (let seed = Number(match[1]); seed <= Number(match[2] ?? match[1]); seed++) {
      if (!seeds.includes(seed)) seeds.push(seed);
      if (seeds.length > MAX_REQUESTS) break;
    }
  }
  return seeds;
}

function requestedSeeds() {
  if ($("mode-seeds").checked) return parseSeeds($("seeds").value);
  const count = Number($("count").value);
  if (!Number.isInteger(count) || count < 1 || count > 50) {
    throw new PageError(`Invalid count "${$("count").value}": give a whole number from 1 to 50.`);
  }
  return Array(count).fill(null);  // the server draws each seed and echoes it back
}

// ---------------------------------------------------------------------------------------------------- drawing

function decode(base64, Type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
}

function robustPeak(counts) {
  const positive = Array.from(counts).filter((v) => v > 0).sort((a, b) => a - b);
  if (!positive.length) return 0;
  return positive[Math.min(positive.length - 1, Math.floor(positive.length * ROBUST_PEAK_PERCENTILE / 100))];
}

// Where the midline a*column + b*row + c = 0 (pixel centres) crosses the image's border: two [column, row] points.
function midlineEnds([a, b, c], columns, rows) {
  const points = [];
  const low = -0.5, right = columns - 0.5, bottom = rows - 0.5;
  if (Math.abs(b) > 1e-12) {
    for (const x of [low, right]) {
      const y = -(a * x + c) / b;
      if (y >= low && y <= bottom) points.push([x, y]);
    }
  }
  if (Math.abs(a) > 1e-12) {
    for (const y of [low, bottom]) {
      const x = -(b * y + c) / a;
      if (x >= low && x <= right) points.push([x, y]);
    }
  }
  if (points.length < 2) return null;
  let best = [points[0], points[1]], longest = -1;
  for (const p of points) for (const q of points) {
    const length = (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2;
    if (length > longest) { longest = length; best = [p, q]; }
  }
  return best;
}

function drawSlice(canvas, entry) {
  const view = entry.view, { rows, columns } = view, [width_mm, height_mm] = view.spacing_mm;
  const size = CANVAS_PX * CANVAS_SCALE;
  canvas.width = canvas.height = size;
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, size, size);
  const mmToPx = 0.94 * size / Math.max(columns * width_mm, rows * height_mm);
  const pw = width_mm * mmToPx, ph = height_mm * mmToPx;
  const x0 = (size - columns * pw) / 2, y0 = (size - rows * ph) / 2;
  const image = new ImageData(columns, rows);
  const peak = state.peak > 0 ? state.peak : 1;
  entry.counts.forEach((value, index) => {
    const grey = Math.max(0, Math.min(255, Math.round(255 * value / peak)));
    image.data.set([grey, grey, grey, 255], index * 4);
  });
  const pixels = document.createElement("canvas");
  pixels.width = columns;
  pixels.height = rows;
  pixels.getContext("2d").putImageData(image, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(pixels, x0, y0, columns * pw, rows * ph);
  // hemisphere outlines: the pixel edges between a region and anything else
  const regions = entry.regions, label = (r, c) => (r < 0 || c < 0 || r >= rows || c >= columns) ? 0 : regions[r * columns + c];
  context.lineWidth = 1.5 * CANVAS_SCALE;
  for (const [code, colour] of Object.entries(REGION_COLOURS)) {
    context.strokeStyle = colour;
    context.beginPath();
    for (let r = 0; r < rows; r++) for (let c = 0; c < columns; c++) {
      if (label(r, c) !== Number(code)) continue;
      const x = x0 + c * pw, y = y0 + r * ph;
      if (label(r, c - 1) !== Number(code)) { context.moveTo(x, y); context.lineTo(x, y + ph); }
      if (label(r, c + 1) !== Number(code)) { context.moveTo(x + pw, y); context.lineTo(x + pw, y + ph); }
      if (label(r - 1, c) !== Number(code)) { context.moveTo(x, y); context.lineTo(x + pw, y); }
      if (label(r + 1, c) !== Number(code)) { context.moveTo(x, y + ph); context.lineTo(x + pw, y + ph); }
    }
    context.stroke();
  }
  const ends = midlineEnds(view.midline, columns, rows);
  if (ends) {
    context.strokeStyle = "#ffd700";
    context.setLineDash([10, 7]);
    context.beginPath();
    context.moveTo(x0 + (ends[0][0] + 0.5) * pw, y0 + (ends[0][1] + 0.5) * ph);
    context.lineTo(x0 + (ends[1][0] + 0.5) * pw, y0 + (ends[1][1] + 0.5) * ph);
    context.stroke();
    context.setLineDash([]);
  }
  context.fillStyle = "#fff";
  context.font = `${14 * CANVAS_SCALE}px system-ui, sans-serif`;
  context.textBaseline = "middle";
  const margin = 6 * CANVAS_SCALE;
  context.textAlign = "left";
  context.fillText(view.marks.left, margin, size / 2);
  context.textAlign = "right";
  context.fillText(view.marks.right, size - margin, size / 2);
  context.textAlign = "center";
  context.textBaseline = "top";
  context.fillText(view.marks.top, size / 2, margin);
  context.textBaseline = "bottom";
  context.fillText(view.marks.bottom, size / 2, size - margin);
  canvas.dataset.drawn = "true";
}

function redrawAll() {
  $("window-peak").textContent = state.peak ? state.peak.toFixed(0) : "-";
  state.results.forEach((entry) => drawSlice(entry.canvas, entry));
}

// ---------------------------------------------------------------------------------------------------- results

const number = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : "-");

// The statistics on a card and in the table: those the server declares as a summary, in its order and digits.
const summaryStatistics = () => state.config.statistics.filter((statistic) => statistic.summary);
const UNIT_MARKS = { percent: " %" };  // a unit shown beside a statistic's label or value
const markOf = (statistic) => UNIT_MARKS[statistic.unit] || "";
const headOf = (statistic) => `${statistic.label}${markOf(statistic)}`;
const CARD_COLUMNS = 2;              // statistics per line on a card

// The table's head: one column per summary statistic (built again at each start, e.g. after a new login).
function showStatisticsHead() {
  document.querySelectorAll("#stats-head th.statistic").forEach((head) => head.remove());
  for (const statistic of summaryStatistics()) {
    const head = document.createElement("th");
    head.scope = "col";
    head.className = "statistic";
    head.textContent = headOf(statistic);
    $("stats-head").appendChild(head);
  }
}

function statsText(stats) {
  const items = summaryStatistics().map(
    (statistic) => `${statistic.label} ${number(stats[statistic.key], statistic.digits)}${markOf(statistic)}`);
  const lines = [];
  for (let start = 0; start < items.length; start += CARD_COLUMNS) {
    lines.push(items.slice(start, start + CARD_COLUMNS).join("  "));
  }
  return lines.join("\n");
}

// A result's territory or severity (a model with defect axes: what it was given or drew) as the manifest writes it:
// "MCA", "left=MCA;right=ACA" when a bilateral defect's sides differ, "" when the model has none.
function lesionText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "object") return String(value);
  const values = Object.values(value);
  if (values.every((item) => item === null)) return "";
  if (unique(values).length === 1) return String(values[0]);
  return Object.entries(value).map(([side, item]) => `${side}=${item ?? ""}`).join(";");
}

function describeResult(entry) {
  const r = entry.result;
  const lesion = [lesionText(r.condition.territory), lesionText(r.condition.severity)].filter(Boolean).join(" ");
  return `${r.condition.label}${lesion ? ` (${lesion})` : ""}, seed ${r.seed}`;
}

function addResult(answer, study) {
  const entry = { id: answer.id, result: answer.result, view: answer.view, study,
                  counts: decode(answer.view.counts, Float32Array), regions: decode(answer.view.regions, Uint8Array) };
  entry.index = state.results.length + 1;
  const card = document.createElement("article");
  card.className = "result";
  card.tabIndex = 0;
  card.dataset.resultId = entry.id;
  const title = document.createElement("h3");
  title.textContent = `#${entry.index} ${describeResult(entry)}`;
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `Synthetic slice ${describeResult(entry)} over ${study}, with hemisphere ROIs`);
  const stats = document.createElement("pre");
  stats.className = "stats";
  if (entry.result.stats) {
    stats.textContent = statsText(entry.result.stats);
  } else {
    stats.textContent = `no statistics: ${entry.result.stats_error || "no brain found"}`;
    stats.classList.add("stats-error");
  }
  card.append(title, canvas, stats);
  if (entry.result.derivation) {
    card.appendChild(element("p", "derivation", `Made from ${entry.result.derivation.description}.`));
  }
  $("results").appendChild(card);
  entry.canvas = canvas;
  state.results.push(entry);
  addRow(entry);
  const peak = robustPeak(entry.counts);
  if (peak > state.peak) {
    state.peak = peak;
    redrawAll();
  } else {
    drawSlice(canvas, entry);
  }
  $("download-csv").disabled = false;
  updateExportButton();
}

function addRow(entry) {
  const row = document.createElement("tr");
  row.dataset.resultId = entry.id;
  const select = document.createElement("input");
  select.type = "checkbox";
  select.className = "select-result";
  select.disabled = !entry.result.stats;
  select.setAttribute("aria-label", `Select #${entry.index} ${describeResult(entry)} for export`);
  select.addEventListener("change", updateExportButton);
  const first = document.createElement("td");
  first.appendChild(select);
  row.appendChild(first);
  const stats = entry.result.stats || {};
  const cells = [[`#${entry.index}`, ""], [entry.study, ""], [`${entry.result.model} ${entry.result.version}`, ""],
                 [entry.result.condition.label, ""], [String(entry.result.seed), "num"],
                 ...summaryStatistics().map((statistic) => [number(stats[statistic.key], statistic.digits), "num"])];
  for (const [text, kind] of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (kind) cell.className = kind;
    row.appendChild(cell);
  }
  $("stats-body").appendChild(row);
}

function selectedIds() {
  return [...document.querySelectorAll(".select-result:checked")].map((box) => box.closest("tr").dataset.resultId);
}

function updateExportButton() {
  const count = selectedIds().length;
  $("export").disabled = !state.config.export || count === 0 || state.busy;
  $("export").textContent = count ? `Export ${count} selected to PACS` : "Export selected to PACS";
}

function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function downloadCsv() {
  const columns = [...CSV_COLUMNS, ...state.config.statistics.map((statistic) => statistic.key), ...CSV_TAIL];
  const lines = [columns.join(",")];
  for (const entry of state.results) {
    const r = entry.result, stats = r.stats || {};
    const values = { study: entry.study, model: r.model, version: r.version, sha256: r.sha256,
                     level: r.condition.level, pattern: r.condition.pattern, side: r.condition.side || "",
                     territory: lesionText(r.condition.territory), severity: lesionText(r.condition.severity),
                     seed: r.seed, psi: r.psi, base: r.base, stats_error: r.stats_error || "", ...stats };
    lines.push(columns.map((column) => csvField(values[column])).join(","));
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.download = "spectgan_stats.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

// ------------------------------------------------------------------------------------------------- generation

function setBusy(busy) {
  state.busy = busy;
  $("generate").disabled = busy;
  updateExportButton();
}

async function generate() {
  const study = $("study").value, model = $("model").value;
  if (!study) throw new PageError("Choose a reference study first (the server's datastore lists none?).");
  const conditions = state.conditions.length ? state.conditions : [selectedCondition()];
  const base = selectedBase(conditions);
  const seeds = requestedSeeds();
  const jobs = conditions.flatMap((condition) => seeds.map((seed) => ({ condition, seed })));
  if (jobs.length > MAX_REQUESTS) {
    throw new PageError(`That is ${jobs.length} slices; request at most ${MAX_REQUESTS} at a time.`);
  }
  setBusy(true);
  $("progress-box").hidden = false;
  $("progress").max = jobs.length;
  $("progress").value = 0;
  const started = performance.now();
  try {
    for (const [index, job] of jobs.entries()) {
      $("progress-text").textContent = `Generating ${index + 1} of ${jobs.length}: ${job.condition.label}` +
        (job.seed === null ? ", random seed" : `, seed ${job.seed}`);
      const params = { ...job.condition.values, seed: job.seed, ...base };
      const form = new FormData();
      form.append("params", JSON.stringify(params));
      const answer = await call(`${API}/generate/${encodeURIComponent(model)}?image=${encodeURIComponent(study)}`,
                                `Generation of ${job.condition.label}`, { method: "POST", body: form });
      addResult(answer, study);
      $("progress").value = index + 1;
    }
    $("progress-text").textContent = `Done: ${jobs.length} slice${jobs.length > 1 ? "s" : ""} in ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s`;
  } catch (error) {
    $("progress-text").textContent = `Stopped after ${$("progress").value} of ${jobs.length}.`;
    throw error;
  } finally {
    setBusy(false);
  }
}

// ------------------------------------------------------------------------------------------------------ export

async function exportSelected() {
  const ids = selectedIds();
  if (!ids.length) throw new PageError("Select the results to export in the table first.");
  setBusy(true);
  $("export-status").textContent = `Exporting ${ids.length} result${ids.length > 1 ? "s" : ""} to the PACS…`;
  try {
    const answer = await postJson(`${API}/export`, "Export to the PACS", { results: ids, run: state.run });
    state.run = answer.run;
    $("export-status").textContent = `Exported ${ids.length} result${ids.length > 1 ? "s" : ""}: ` +
      `${answer.instances} DICOM instances confirmed by the PACS (run ${answer.run}).`;
    for (const study of answer.studies) showExportedStudy(study);
  } catch (error) {
    $("export-status").textContent = "Export failed; see the message above.";
    throw error;
  } finally {
    setBusy(false);
  }
}

function showExportedStudy(study) {
  const id = `exported-${study.study_instance_uid}`;
  const item = document.getElementById(id) || document.createElement("li");
  item.id = id;
  const where = study.filed_with === "source" ? "Filed with the source study" : `Synthetic study ${study.patient_id}`;
  item.replaceChildren(`${where} over ${study.reference} ` +
                       `(${study.scans} scan${study.scans > 1 ? "s" : ""} in this export) `);
  if (study.ohif_url) {
    const link = document.createElement("a");
    link.href = study.ohif_url;
    link.target = "_blank";
    link.rel = "noopener";
    link.className = "open-ohif";
    link.textContent = "Open in OHIF";
    item.appendChild(link);
  } else {
    item.append(`Study Instance UID ${study.study_instance_uid} (the bundled OHIF reads only this server's ` +
                "DICOMweb datastore)");
  }
  $("exported").appendChild(item);
}

// ------------------------------------------------------------------------------------------------ models panel

function element(tag, className, text) {
  const item = document.createElement(tag);
  if (className) item.className = className;
  if (text !== undefined) item.textContent = text;
  return item;
}

const reportUrl = (model, version) =>
  `/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/report/`;

// A version's evaluation: the gate's verdict or the fidelity report's summary, its key numbers, a link to the report.
function evaluationOf(model, entry) {
  const box = element("span", "evaluation");
  const evaluation = entry.evaluation;
  if (!evaluation) {
    box.textContent = "not evaluated";
    return box;
  }
  const verdict = evaluation.passed === null ? "" : evaluation.passed ? "passed" : "failed";
  box.appendChild(element("span", verdict, `${evaluation.source}: ${evaluation.summary}`));
  if (evaluation.report) {
    const link = element("a", "report-link", "Full report");
    Object.assign(link, { href: reportUrl(model, entry.version), target: "_blank", rel: "noopener" });
    link.setAttribute("aria-label", `Full evaluation report of ${model} ${entry.version}`);
    box.append(" ", link);
  }
  const numbers = Object.entries(evaluation.measures).map(([name, value]) => `${name} ${number(value, 3)}`);
  if (numbers.length) box.appendChild(element("span", "measures", numbers.join("  ")));
  return box;
}

const cohortOf = (entry) => `${entry.cohort ?? "unknown"}, ${entry.iterations ?? "?"} iterations` +
  (entry.exported ? `, exported ${entry.exported.slice(0, 10)}` : "");

function versionsTable(model, entries) {
  const table = element("table", "versions");
  const head = table.createTHead().insertRow();
  for (const title of ["Version", "State", "sha256", "Training cohort", "Evaluation"]) {
    head.appendChild(element("th", "", title)).scope = "col";
  }
  const body = table.createTBody();
  for (const entry of entries) {
    const row = body.insertRow();
    row.dataset.version = entry.version;
    row.insertCell().textContent = entry.version;
    row.insertCell().textContent = entry.state;
    row.insertCell().appendChild(element("code", "", entry.sha256.slice(0, SHA256_SHOWN)));
    row.insertCell().textContent = cohortOf(entry);
    row.insertCell().appendChild(evaluationOf(model, entry));
  }
  return table;
}

// One model: its served version (sha256, training cohort, evaluation) and its other kept versions.
function modelCard(model, entries) {
  const card = element("article", "model-card");
  card.dataset.model = model;
  const served = entries.find((entry) => entry.state === "served");
  card.appendChild(element("h3", "", served ? `${model} ${served.version}` : `${model}: no served version`));
  if (served) {
    const list = element("dl", "served");
    list.dataset.version = served.version;
    const version = element("dd");
    version.append(`${served.version}, sha256 `, element("code", "sha256", served.sha256.slice(0, SHA256_SHOWN)));
    const evaluation = element("dd");
    evaluation.appendChild(evaluationOf(model, served));
    list.append(element("dt", "", "Served version"), version, element("dt", "", "Training cohort"),
                element("dd", "", cohortOf(served)), element("dt", "", "Evaluation"), evaluation);
    card.appendChild(list);
  }
  const others = entries.filter((entry) => entry !== served);
  card.appendChild(element("h4", "hint", others.length ? "Other kept versions (published ones can be rolled back " +
    "to; candidates were kept back by the quality gate)" : "No other version kept."));
  if (others.length) card.appendChild(versionsTable(model, others));
  return card;
}

async function showModels() {
  const models = Object.keys(state.models);
  const listings = await Promise.all(models.map((model) => call(`/models/${encodeURIComponent(model)}/versions`,
                                                                `Listing the versions of ${model}`)));
  $("models").replaceChildren(...listings.map((listing, index) => modelCard(models[index], listing.versions)));
}

function describeTraining(training) {
  if (training.status === "NONE") return "Training: none since the server started.";
  const what = `${training.model}${training.cohort ? ` on cohort ${training.cohort}` : ""}`;
  const when = training.running ? `since ${training.started}` : `${training.started} to ${training.ended || "?"}`;
  return `Training ${what}: ${training.status.toLowerCase()} (${when})${training.latest ? `. ${training.latest}` : ""}`;
}

async function showTraining() {
  const training = await call(`${API}/training`, "Reading the state of the training");
  $("training").textContent = describeTraining(training);
  $("models-section").dataset.training = training.status.toLowerCase();
  return training;
}

function stopWatchingTraining() {
  clearTimeout(state.trainingTimer);
  state.trainingTimer = null;
  $("models-section").dataset.polling = "false";
}

// While a training is queued or runs, its state is read again every TRAINING_POLL_MS; when it has ended, the
// models are read again (a published version is served from then on) and the polling stops.
function watchTraining(training) {
  stopWatchingTraining();
  if (!training.running) return;
  $("models-section").dataset.polling = "true";
  state.trainingTimer = setTimeout(guarded(async () => {
    const next = await showTraining();
    if (next.running) {
      watchTraining(next);
      return;
    }
    try {
      await readModels();
      await showModels();
    } finally {
      stopWatchingTraining();
    }
  }), TRAINING_POLL_MS);
}

async function refreshModels() {
  const training = await showTraining();
  await showModels();
  watchTraining(training);
}

// ------------------------------------------------------------------------------------------------------- start

// The served models as /info/ lists them, in the model choice (a new version shows in its label).
async function readModels() {
  const info = await call("/info/", "Reading the server's models");
  state.models = info.models || {};
  fill($("model"), Object.keys(state.models), (name) => `${name} ${state.models[name].bundle?.version || ""}`.trim());
}

async function start() {
  const session = await call(`${API}/session`, "Checking the login");
  $("logout").hidden = !session.token_required;
  if (!session.logged_in) {
    showLogin("");
    return;
  }
  const [, studies, config] = await Promise.all([
    readModels(), call(`${API}/studies`, "Listing the datastore's studies"),
    call(`${API}/config`, "Reading the page's settings")]);
  state.config = config;
  showStatisticsHead();
  fill($("study"), studies.studies);
  if (!studies.studies.length) throw new PageError("The server's datastore holds no reference study.");
  if (!Object.keys(state.models).length) throw new PageError("The server serves no trained model.");
  buildBaseChoice();
  buildAxisControls();
  if (!config.export) $("export-status").textContent = "Export is off: this server has no PACS configured.";
  $("generate").disabled = false;
  await refreshModels();
}

document.addEventListener("DOMContentLoaded", () => {
  $("generate").disabled = true;
  $("base").addEventListener("change", () => { showFileWith(); updateAxisChoices(); });
  $("model").addEventListener("change", () => {
    state.conditions = [];
    showConditions();
    buildBaseChoice();
    buildAxisControls();
  });
  $("add-condition").addEventListener("click", addCondition);
  $("seeds").addEventListener("focus", () => { $("mode-seeds").checked = true; });
  $("count").addEventListener("focus", () => { $("mode-count").checked = true; });
  $("request").addEventListener("submit", guarded(generate));
  $("download-csv").addEventListener("click", guarded(downloadCsv));
  $("export").addEventListener("click", guarded(exportSelected));
  $("login").addEventListener("submit", guarded(login));
  $("logout").addEventListener("click", guarded(logout));
  $("refresh-models").addEventListener("click", guarded(refreshModels));
  $("select-all").addEventListener("change", (event) => {
    document.querySelectorAll(".select-result:not(:disabled)").forEach((box) => { box.checked = event.target.checked; });
    updateExportButton();
  });
  showConditions();
  guarded(start)();
});
