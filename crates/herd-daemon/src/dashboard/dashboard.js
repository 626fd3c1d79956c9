// herd's dashboard: the view comes from /api/events (server-sent events, one a second);
// actions go to /api/act with the session's CSRF token (see herd-daemon/src/http.rs).
"use strict";
let me = null;        // {user, uid, csrf} once logged in with `herd dashboard`
let view = null;      // the last view
const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const human = (b) => { const u = ["B", "K", "M", "G", "T"]; let i = 0; while (b >= 1024 && i < 4) { b /= 1024; i++; } return (i ? b.toFixed(1) : b) + u[i]; };

function say(text, bad) { const s = $("#status"); s.textContent = text; s.className = bad ? "bad" : ""; }

async function whoami() {
  const r = await fetch("/api/whoami");
  me = r.ok ? await r.json() : null;
  const who = $("#who");
  who.replaceChildren();
  if (me && me.user !== null) {
    who.append(`acting as ${me.user} (uid ${me.uid}) `, el("button", { onclick: logout }, "log out"));
  } else {
    me = null;
    who.append("looking only: run ", el("code", {}, "herd dashboard"), " to act");
  }
}

async function logout() {
  await act({ act: "logout" });
  await whoami();
}

async function act(body) {
  if (!me) { say("to act, open the link that `herd dashboard` prints", true); return null; }
  const r = await fetch("/api/act", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Herd-CSRF": me.csrf },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({ ok: false, message: `HTTP ${r.status}` }));
  say(answer.message, !answer.ok);
  return answer;
}

function chart(points) {
  const W = 600, H = 60, svgns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgns, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...points.map((p) => p.load));
  for (const [key, color, max] of [["load", "var(--load)", top], ["mem", "var(--mem)", 1]]) {
    const line = document.createElementNS(svgns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "2");
    line.setAttribute("points", points.map((p) => `${(W - p.ago).toFixed(1)},${(H - 2 - (p[key] / max) * (H - 4)).toFixed(1)}`).join(" "));
    svg.append(line);
  }
  return svg;
}

function render() {
  if (!view) return;
  const nodes = [...view.nodes].sort((a, b) => a.name.localeCompare(b.name));
  const procs = view.processes.rows;
  const up = nodes.filter((n) => n.state === "up" || n.state === "blocked").length;
  let head = `${up} of ${nodes.length} nodes up, ${procs.length} processes, served by ${view.node}`;
  for (const u of view.processes.unanswered) head += ` · ${u.node} did not answer`;
  $("#cluster").textContent = head;
  const grid = $("#nodes");
  grid.replaceChildren();
  for (const n of nodes) {
    const live = n.state === "up" || n.state === "blocked";
    const card = el("section", { class: "node" + (live ? "" : " down"), "data-node": n.name });
    const flags = ["blocked", "quiet", "stay", "lstay"].filter((f) => n.status && n.status[f]);
    card.append(el("h2", {}, n.name, el("span", { class: "state" }, [n.state, ...flags.filter((f) => f !== "blocked")].join(" "))));
    card.append(el("div", { class: "figures" },
      el("b", { class: "load" }, `load ${n.load.toFixed(2)}`), ` / ${n.cpus} CPUs · `,
      el("b", { class: "mem" }, `mem ${human(n.mem_total - n.mem_free)}`), ` of ${human(n.mem_total)} · speed ${n.speed}`));
    card.append(chart(view.history[n.name] || []));
    if (n.is_self && me && me.uid === 0) {
      const toggle = (name, on, off) => el("label", {}, Object.assign(el("input", {
        type: "checkbox", "data-toggle": name,
        onchange: (e) => act({ act: "ctl", op: { op: e.target.checked ? on : off } }),
      }), { checked: !!(n.status && n.status[name]) }), ` ${name}`);
      card.append(el("div", { class: "toggles" }, toggle("blocked", "block", "no_block"), toggle("quiet", "quiet", "no_quiet")));
    }
    const list = el("div", { class: "procs" });
    for (const p of procs.filter((p) => p.where === n.name).sort((a, b) => b.cpu - a.cpu)) {
      const chip = el("div", {
        class: "proc" + (p.lock ? " locked" : "") + (p.cantmove.length ? " cannot" : ""),
        "data-home": p.home, "data-pid": String(p.pid), title: [p.cmd, ...p.cantmove].join("\n"),
      },
        el("span", { class: "pid" }, String(p.pid)),
        el("span", { class: "from" }, p.home === n.name ? "at home" : `from ${p.home}`),
        el("span", { class: "cmd" }, p.cmd),
        el("span", { class: "cpu" }, `${p.cpu.toFixed(0)}%`),
        el("button", { "data-lock": "1", onclick: () => act({ act: "lock", home: p.home, pid: p.pid, lock: !p.lock }) }, p.lock ? "unlock" : "lock"));
      chip.addEventListener("pointerdown", (e) => drag(e, chip, p));
      list.append(chip);
    }
    if (!list.children.length) list.append(el("div", { class: "empty" }, live ? "no migratable process runs here" : "down"));
    card.append(list);
    grid.append(card);
  }
}

// Dragging by pointer events (not HTML5 drag and drop): it works the same with a mouse, a
// touch screen and WebDriver.
let dragging = null;
function drag(e, chip, p) {
  if (e.target.closest("button")) return;
  e.preventDefault();
  const ghost = chip.cloneNode(true);
  ghost.classList.add("ghost");
  ghost.style.width = chip.offsetWidth + "px";
  document.body.append(ghost);
  dragging = { p, ghost };
  const place = (ev) => { ghost.style.left = ev.clientX + 4 + "px"; ghost.style.top = ev.clientY + 4 + "px"; };
  const over = (ev) => document.elementFromPoint(ev.clientX, ev.clientY)?.closest(".node");
  place(e);
  const move = (ev) => {
    place(ev);
    document.querySelectorAll(".node.drop").forEach((n) => n.classList.remove("drop"));
    over(ev)?.classList.add("drop");
  };
  const up = (ev) => {
    document.removeEventListener("pointermove", move);
    document.removeEventListener("pointerup", up);
    ghost.remove();
    document.querySelectorAll(".node.drop").forEach((n) => n.classList.remove("drop"));
    dragging = null;
    const to = over(ev)?.dataset.node;
    if (!to || to === p.where) return;
    const target = to === p.home ? "home" : to;
    say(`moving ${p.pid} (home ${p.home}) to ${target}…`);
    act({ act: "move", home: p.home, pid: p.pid, target });
  };
  document.addEventListener("pointermove", move);
  document.addEventListener("pointerup", up);
}

function listen() {
  const events = new EventSource("/api/events");
  events.onmessage = (m) => { view = JSON.parse(m.data); if (!dragging) render(); };
  events.onerror = () => { $("#cluster").textContent = "herdd does not answer; trying again…"; };
}

whoami().then(listen);
