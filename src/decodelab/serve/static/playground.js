// decodelab playground: streams /v1/completions (or chat) with decoding.trace, and colours each
// token by how it was produced. No build step, no dependencies.
"use strict";
const $ = (sel, el = document) => el.querySelector(sel);
let INFO = null;
let controllers = [];

async function init() {
  INFO = await (await fetch("/decodelab/info")).json();
  $("#model-info").textContent = `${INFO.model} (${INFO.family}${INFO.draft ? ", draft " + INFO.draft : ""})`
    + ` · served by ${INFO.instance}`;
  $("#chat").disabled = !INFO.chat;
  const usable = Object.values(INFO.methods).filter(m => !m.unavailable);
  const second = usable.find(m => m.family === "speculative" && m.name === "sps")
    || usable.find(m => m.name !== INFO.default_method) || usable[0];
  for (const [id, first] of [["a", INFO.default_method], ["b", second ? second.name : INFO.default_method]]) {
    const el = $("#pane-" + id);
    el.append($("#pane-template").content.cloneNode(true));
    const sel = $(".method", el);
    for (const m of usable) sel.append(new Option(m.name, m.name));
    sel.value = first;
    sel.onchange = () => renderOptions(el);
    renderOptions(el);
    $(".replay", el).onclick = () => replay(el);
  }
  $("#compare").onchange = () => { $("#pane-b").hidden = !$("#compare").checked; };
  $("#run").onclick = runAll;
  $("#stop").onclick = () => controllers.forEach(c => c.abort());
  document.body.dataset.ready = "1";
}

function choicesOf(opt) {  // "one of 'a', 'b'" -> ["a", "b"]
  return opt.allowed.startsWith("one of") ? [...opt.allowed.matchAll(/'([^']*)'/g)].map(m => m[1]) : null;
}

function renderOptions(el) {
  const m = INFO.methods[$(".method", el).value];
  $(".summary", el).textContent = m.summary;
  $(".summary", el).title = m.summary;
  const box = $(".options", el);
  box.replaceChildren();
  for (const o of m.options) {
    const label = document.createElement("label");
    label.title = `${o.help} (${o.allowed})`;
    label.append(o.name + " ");
    const choices = o.type.startsWith("bool") ? ["true", "false"] : choicesOf(o);
    let input;
    if (choices) {
      input = document.createElement("select");
      input.append(new Option(`default (${o.default})`, ""));
      for (const c of choices) input.append(new Option(c, c));
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.placeholder = String(o.default);
    }
    input.name = o.name;
    input.dataset.type = o.type;
    label.append(input);
    box.append(label);
  }
}

function collectOptions(el) {
  const out = {};
  for (const input of el.querySelectorAll(".options [name]")) {
    const v = input.value.trim();
    if (v === "") continue;
    const t = input.dataset.type;
    out[input.name] = t.startsWith("bool") ? v === "true" : t.startsWith("int") ? parseInt(v, 10)
      : t.startsWith("float") ? parseFloat(v) : v;
  }
  return out;
}

function requestBody(el) {
  const body = {model: INFO.model, stream: true, max_tokens: parseInt($("#max_tokens").value, 10),
                decoding: {method: $(".method", el).value, trace: true, ...collectOptions(el)}};
  for (const k of ["temperature", "top_p", "seed"]) {
    const v = $("#" + k).value.trim();
    if (v !== "") body[k] = Number(v);
  }
  const prompt = $("#prompt").value;
  if ($("#chat").checked) body.messages = [{role: "user", content: prompt}];
  else body.prompt = prompt;
  return body;
}

async function runAll() {
  const panes = [$("#pane-a")];
  if ($("#compare").checked) panes.push($("#pane-b"));
  controllers = panes.map(() => new AbortController());
  $("#run").disabled = true;
  $("#stop").disabled = false;
  await Promise.all(panes.map((el, i) => runPane(el, controllers[i].signal)));
  $("#run").disabled = false;
  $("#stop").disabled = true;
}

function setStat(el, cls, v) { $("." + cls, el).textContent = v; }

function reset(el) {
  $(".output", el).replaceChildren();
  const canvas = $(".canvas", el);
  canvas.replaceChildren();
  canvas.hidden = true;
  $(".replay", el).hidden = true;
  for (const c of ["s-tokens", "s-tps", "s-tau", "s-fwd", "s-dfwd", "s-nfe", "s-status"]) setStat(el, c, "–");
  $(".s-status", el).className = "s-status";
  el.dataset.state = "running";
  delete el.dataset.stats;
}

async function runPane(el, signal) {
  reset(el);
  const chat = $("#chat").checked;
  const run = {tokens: 0, steps: 0, t0: performance.now(), order: [], maxTokens: parseInt($("#max_tokens").value, 10)};
  let resp;
  try {
    resp = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
      method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(requestBody(el)), signal});
  } catch (e) { return fail(el, String(e)); }
  if (!resp.ok) {
    const err = await resp.json().catch(() => ({error: {message: resp.statusText}}));
    return fail(el, `${resp.status}: ${err.error.message}`);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += decoder.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const obj = JSON.parse(event.slice(6));
        if (obj.error) fail(el, obj.error.message);
        else onChunk(el, obj, run);
      }
    }
  } catch (e) {
    fail(el, e.name === "AbortError" ? "stopped" : String(e));
  }
}

function fail(el, message) {
  el.dataset.state = "error";
  const s = $(".s-status", el);
  s.textContent = message;
  s.className = "s-status error";
}

function onChunk(el, obj, run) {
  const ext = obj.decodelab || {};
  if (ext.stats) return onDone(el, obj, run);
  const tokens = ext.tokens || [], pieces = ext.pieces || [];
  run.tokens += tokens.length;
  run.steps += 1;
  const secs = (performance.now() - run.t0) / 1000;
  setStat(el, "s-tokens", run.tokens);
  setStat(el, "s-tps", (run.tokens / secs).toFixed(1));
  setStat(el, "s-tau", (run.tokens / run.steps).toFixed(2) + "…");  // live: one step is one target forward
  setStat(el, "s-fwd", run.steps + "…");
  if (ext.unmasked) drawUnmasked(el, ext.unmasked, run);
  const out = $(".output", el);
  if (ext.trace && ext.trace.length) {
    let k = 0;
    for (const step of ext.trace) {
      const group = span("step", "");
      group.dataset.accepted = step.accepted;
      step.tokens.forEach((t, j) => {
        const kind = j < step.accepted ? "accepted" : step.draft.length ? "bonus" : "plain";
        group.append(span("tok " + kind, pieces[k++] ?? ""));
      });
      const onPath = new Set(step.path);
      const rejected = step.draft.map((t, n) => n).filter(n => !onPath.has(n));
      // faint and on one line: a rejected newline shows as a return sign instead of breaking the text
      for (const n of rejected.slice(0, 6)) group.append(span("tok rejected", step.draft_pieces[n].replace(/\n/g, "\u21b5")));
      if (rejected.length > 6) group.append(span("tok rejected", `+${rejected.length - 6}`));
      out.append(group);
    }
  } else if (tokens.length) {
    const group = span("step", "");
    pieces.forEach(p => group.append(span("tok plain", p)));
    out.append(group);
  }
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

function onDone(el, obj, run) {
  const st = obj.decodelab.stats;
  const secs = (performance.now() - run.t0) / 1000;
  setStat(el, "s-tokens", st.new_tokens);
  setStat(el, "s-tps", (st.new_tokens / secs).toFixed(1));
  setStat(el, "s-tau", st.tau.toFixed(2));
  setStat(el, "s-fwd", st.target_forwards);
  setStat(el, "s-dfwd", st.draft_forwards);
  setStat(el, "s-nfe", st.nfe);
  const s = $(".s-status", el);
  s.textContent = `done (${obj.choices[0].finish_reason}) in ${obj.decodelab.elapsed_s}s`;
  s.className = "s-status ok";
  el.dataset.stats = JSON.stringify(st);
  el.dataset.state = "done";
  if (run.order.length) {
    recolor(el, run);
    $(".replay", el).hidden = false;
  }
}

// -- diffusion: the canvas, each position coloured by the step that committed it ----------------
function cells(el, n) {
  const canvas = $(".canvas", el);
  canvas.hidden = false;
  while (canvas.children.length < n) {
    const c = span("cell", "·");
    c.dataset.pos = canvas.children.length;
    canvas.append(c);
  }
  return canvas.children;
}

function shade(step, total) {  // early steps dark, late steps light
  const f = total > 1 ? step / (total - 1) : 0;
  return `hsl(265, 60%, ${Math.round(40 + 50 * f)}%)`;
}

function drawUnmasked(el, u, run) {
  const cs = cells(el, run.maxTokens);
  const step = run.order.length;
  run.order.push(u);
  u.positions.forEach((p, j) => {
    const c = cs[p];
    if (!c) return;
    c.textContent = u.pieces[j];
    c.className = "cell done";
    c.dataset.step = step;
    c.title = `committed at step ${step + 1}`;
    c.style.background = shade(step, run.maxTokens);
  });
}

function recolor(el, run) {
  for (const c of $(".canvas", el).children) {
    if (c.dataset.step !== undefined) c.style.background = shade(+c.dataset.step, run.order.length);
  }
  el._order = run.order;
}

function replay(el) {
  const order = el._order || [];
  const cs = $(".canvas", el).children;
  for (const c of cs) { c.textContent = "·"; c.className = "cell"; c.style.background = ""; }
  order.forEach((u, step) => setTimeout(() => {
    u.positions.forEach((p, j) => {
      if (!cs[p]) return;
      cs[p].textContent = u.pieces[j];
      cs[p].className = "cell done";
      cs[p].style.background = shade(step, order.length);
    });
  }, 120 * (step + 1)));
}

init();
