// decodelab bench page: the server renders a results JSON (its markdown report and PNG plots, the
// same as `decodelab bench report`); this page turns the markdown into HTML and shows the plots.
"use strict";
const $ = (sel) => document.querySelector(sel);

function inline(text) {  // escape, then **bold** and `code`
  const esc = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  return esc.replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>").replace(/`([^`]+)`/g, "<code>$1</code>");
}

function markdown(md) {  // the subset report.markdown writes: headings, lists, quotes, tables, paragraphs
  const out = [];
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith("|")) {
      const rows = [];
      while (i < lines.length && lines[i].startsWith("|")) rows.push(lines[i++]);
      i--;
      const cells = r => r.slice(1, -1).split("|").map(c => c.trim());
      const body = rows.slice(2).map(r => "<tr>" + cells(r).map(c => `<td>${inline(c)}</td>`).join("") + "</tr>");
      out.push("<table><thead><tr>" + cells(rows[0]).map(c => `<th>${inline(c)}</th>`).join("") + "</tr></thead><tbody>"
               + body.join("") + "</tbody></table>");
    } else if (l.startsWith("#")) {
      const n = l.match(/^#+/)[0].length;
      out.push(`<h${n + 1}>${inline(l.slice(n).trim())}</h${n + 1}>`);
    } else if (l.startsWith("- ")) {
      out.push(`<ul><li>${inline(l.slice(2))}</li></ul>`);
    } else if (l.startsWith("> ")) {
      out.push(`<blockquote>${inline(l.slice(2))}</blockquote>`);
    } else if (l.trim()) {
      out.push(`<p>${inline(l)}</p>`);
    }
  }
  return out.join("\n");
}

function show(data, source) {
  $("#source").textContent = source;
  $("#report").innerHTML = markdown(data.markdown);
  const plots = $("#plots");
  plots.replaceChildren();
  for (const p of data.plots) {
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + p.png;
    img.alt = img.title = p.name;
    plots.append(img);
  }
  document.body.dataset.ready = "1";
}

function error(message) {
  $("#report").innerHTML = `<p class="error">${inline(message)}</p>`;
  document.body.dataset.ready = "1";
}

async function fromServer() {
  const r = await fetch("/decodelab/bench");
  const data = await r.json();
  if (r.ok) show(data, "the results file this server was started with");
  else error(data.error.message);
}

$("#file").onchange = async () => {
  const file = $("#file").files[0];
  if (!file) return;
  delete document.body.dataset.ready;
  const r = await fetch("/decodelab/bench/render", {method: "POST", headers: {"content-type": "application/json"},
                                                    body: await file.text()});
  const data = await r.json();
  if (r.ok) show(data, file.name);
  else error(data.error.message);
};

fromServer();
