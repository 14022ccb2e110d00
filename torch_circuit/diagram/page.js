// The interactive diagram of a torch-circuit Circuit. Every view was laid out in Python and
// sits in a <template> named by the StartBlock positions it expands ("" is all folded); this
// script only shows one of them, swaps it when a block's frame is clicked, zooms and pans,
// and shows a layer's details on hover. It computes no layout.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("circuit-data").textContent);
  const stage = document.getElementById("stage");
  const camera = document.getElementById("camera");
  const tip = document.getElementById("tip");
  const status = document.getElementById("status");
  const templates = new Map();
  for (const template of document.querySelectorAll("template[data-view]")) {
    templates.set(template.dataset.view, template);
  }
  const toggles = new Set(data.toggles.map(String));
  const missing = new Set(data.missing.map(String));
  const view = { key: null, scale: 1, x: 12, y: 12, width: 0, height: 0 };

  function keyOf(positions) {
    return [...positions].map(Number).sort((a, b) => a - b).join(",");
  }
  function expanded() {
    return new Set(view.key ? view.key.split(",") : []);
  }
  function place() {
    camera.setAttribute("transform", `translate(${view.x} ${view.y}) scale(${view.scale})`);
  }
  function say(text) {
    status.textContent = text;
  }

  // Show the view `key`; with `anchor`, keep that block's frame where it was on screen.
  function show(key, anchor) {
    const template = templates.get(key);
    if (!template) return false;
    const started = performance.now();
    const svg = template.content.firstElementChild.cloneNode(true);
    camera.replaceChildren(...svg.childNodes);
    for (const frame of camera.querySelectorAll(".frame")) {
      if (toggles.has(frame.dataset.decl)) {
        frame.classList.add("toggle");
        const open = frame.dataset.repeat !== "";
        frame.setAttribute("aria-label", (open ? "fold " : "expand ") + frame.dataset.block);
      }
    }
    view.key = key;
    view.width = Number(template.dataset.width);
    view.height = Number(template.dataset.height);
    if (anchor) {
      const frame = camera.querySelector(`.frame[data-decl="${anchor.decl}"]`);
      if (frame) {
        view.x = anchor.screenX - Number(frame.dataset.x) * view.scale;
        view.y = anchor.screenY - Number(frame.dataset.y) * view.scale;
      }
    }
    place();
    document.getElementById("expand-all").disabled = !templates.has(keyOf(toggles));
    document.getElementById("fold-all").disabled = key === "";
    api.lastSwitchMs = performance.now() - started;
    return true;
  }

  function toggle(frame) {
    const decl = frame.dataset.decl;
    let next = expanded();
    if (next.has(decl)) next.delete(decl);
    else if (data.mode === "one") next = new Set([decl]);
    else next.add(decl);
    const key = keyOf(next);
    if (!templates.has(key)) {
      const why = missing.has(decl) ? "too large to draw expanded" : "not drawn in this page";
      say(`'${frame.dataset.block}' expanded is ${why}; see the folded view or a summary.`);
      return;
    }
    const anchor = {
      decl: decl,
      screenX: view.x + Number(frame.dataset.x) * view.scale,
      screenY: view.y + Number(frame.dataset.y) * view.scale,
    };
    show(key, anchor);
    say(next.has(decl) ? `expanded '${frame.dataset.block}'` : `folded '${frame.dataset.block}'`);
  }

  function zoom(factor, atX, atY) {
    const scale = Math.min(8, Math.max(0.05, view.scale * factor));
    view.x = atX - ((atX - view.x) * scale) / view.scale;
    view.y = atY - ((atY - view.y) * scale) / view.scale;
    view.scale = scale;
    place();
  }
  function fit() {
    const box = stage.getBoundingClientRect();
    view.scale = Math.min(box.width / (view.width + 24), box.height / (view.height + 24), 8);
    view.x = (box.width - view.width * view.scale) / 2;
    view.y = 12;
    place();
  }

  // Pan by dragging anywhere; a press that does not move is a click.
  let drag = null;
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY, moved: false, startX: view.x, startY: view.y };
  });
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true;
    stage.classList.add("panning");
    view.x = drag.startX + dx;
    view.y = drag.startY + dy;
    place();
  });
  window.addEventListener("pointerup", () => {
    stage.classList.remove("panning");
    setTimeout(() => (drag = null), 0);
  });
  stage.addEventListener("click", (event) => {
    if (drag && drag.moved) return;
    if (event.target.closest(".node")) return;
    const frame = event.target.closest(".frame.toggle");
    if (frame) toggle(frame);
  });
  stage.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const box = stage.getBoundingClientRect();
      zoom(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
    },
    { passive: false }
  );

  // Details on hover: set as text, never as markup.
  function details(node) {
    const info = data.details[node.dataset.id];
    if (!info) return false;
    const pre = document.createElement("pre");
    pre.textContent = info.repr;
    const list = document.createElement("dl");
    const rows = [["key", info.key || "(none)"], ["parameters", info.params.toLocaleString("en")]];
    if (data.shapes) rows.push(["output shape", info.shape || "not a tensor"]);
    for (const [name, value] of rows) {
      const term = document.createElement("dt");
      term.textContent = name;
      const text = document.createElement("dd");
      text.textContent = value;
      text.className = name.replace(" ", "-");
      list.append(term, text);
    }
    tip.replaceChildren(pre, list);
    return true;
  }
  stage.addEventListener("mouseover", (event) => {
    const node = event.target.closest(".node");
    if (node && details(node)) tip.hidden = false;
  });
  stage.addEventListener("mouseout", (event) => {
    const node = event.target.closest(".node");
    if (node && !node.contains(event.relatedTarget)) tip.hidden = true;
  });
  stage.addEventListener("mousemove", (event) => {
    if (tip.hidden) return;
    const box = stage.getBoundingClientRect();
    const x = Math.min(event.clientX - box.left + 14, box.width - tip.offsetWidth - 4);
    const y = Math.min(event.clientY - box.top + 14, box.height - tip.offsetHeight - 4);
    tip.style.left = `${Math.max(0, x)}px`;
    tip.style.top = `${Math.max(0, y)}px`;
  });

  // Find a layer by its key (or occurrence path) in the view shown, and centre it.
  function find(text) {
    for (const old of camera.querySelectorAll(".found")) old.classList.remove("found");
    if (!text) return say("");
    const nodes = [...camera.querySelectorAll(".node")];
    const node =
      nodes.find((n) => n.dataset.key === text || n.dataset.id === text) ||
      nodes.find((n) => n.dataset.key.startsWith(text));
    if (!node) {
      const hidden = Object.values(data.details).some((d) => d.key === text);
      return say(hidden ? `'${text}' is in a folded repeat: expand its block` : `no layer '${text}'`);
    }
    node.classList.add("found");
    const shape = node.querySelector("rect, circle");
    const box = stage.getBoundingClientRect();
    const bbox = shape.getBBox();
    view.x = box.width / 2 - (bbox.x + bbox.width / 2) * view.scale;
    view.y = box.height / 2 - (bbox.y + bbox.height / 2) * view.scale;
    place();
    say(`found ${node.dataset.key}`);
  }
  document.getElementById("find").addEventListener("change", (event) => find(event.target.value));

  document.getElementById("fold-all").addEventListener("click", () => show("", null));
  document.getElementById("expand-all").addEventListener("click", () => show(keyOf(toggles), null));
  document.getElementById("fit").addEventListener("click", fit);
  const centre = () => {
    const box = stage.getBoundingClientRect();
    return [box.width / 2, box.height / 2];
  };
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25, ...centre()));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.8, ...centre()));
  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if (event.key === "+" || event.key === "=") zoom(1.25, ...centre());
    else if (event.key === "-") zoom(0.8, ...centre());
    else if (event.key === "0") fit();
  });

  const api = {
    openedMs: null,
    lastSwitchMs: null,
    view: () => view.key,
    show: (key) => show(key, null),
    toggle: (block) => {
      const frame = camera.querySelector(`.frame.toggle[data-block="${CSS.escape(block)}"]`);
      if (frame) toggle(frame);
      return view.key;
    },
    find: find,
  };
  window.circuitView = api;
  show(templates.has(data.initial) ? data.initial : "", null);
  // Open at the printed size, or smaller to fit the window, but never too small to read.
  fit();
  view.scale = Math.min(1, Math.max(view.scale, 0.6));
  const box = stage.getBoundingClientRect();
  view.x = Math.max(12, (box.width - view.width * view.scale) / 2);
  place();
  requestAnimationFrame(() => {
    api.openedMs = performance.now();
    document.documentElement.dataset.ready = "true";
  });
})();
