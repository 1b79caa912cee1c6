// Token-wise ESS view (anywidget front end of ess_widgets.views.TokenView).
//
// Model traits: tokens (string[]), values ((number|null)[]), value_label, selected
// (split index, -1 for none), delimiters (token indices), vmax (number|null), error.
// Token t carries the ESS at split t + 1; clicking it sets `selected` to t + 1.
//
// Token text is untrusted: it only ever reaches the page through textContent and
// setAttribute, never innerHTML.

// Sequential colour scale (ColorBrewer YlGnBu); the same stops are in token_view.py.
const COLOR_STOPS = ["#ffffd9", "#edf8b1", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0", "#225ea8", "#253494", "#081d58"];
const NULL_COLOR = "#e0e0e0";
const VISIBLE_WHITESPACE = { " ": "\u00b7", "\n": "\u23ce", "\r": "\u21b5", "\t": "\u2192" };
const TRAITS = ["tokens", "values", "value_label", "selected", "delimiters", "vmax", "error"];

function rgb(hex) {
  return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

/** Background colour of `value` on [0, vmax]; grey for a missing value. */
export function colorFor(value, vmax) {
  if (value === null || value === undefined || !Number.isFinite(value)) return NULL_COLOR;
  const x = vmax > 0 ? Math.min(Math.max(value / vmax, 0), 1) : 0;
  const pos = x * (COLOR_STOPS.length - 1);
  const k = Math.min(Math.floor(pos), COLOR_STOPS.length - 2);
  const a = rgb(COLOR_STOPS[k]);
  const b = rgb(COLOR_STOPS[k + 1]);
  const f = pos - k;
  return "#" + a.map((u, j) => Math.round(u + (b[j] - u) * f).toString(16).padStart(2, "0")).join("");
}

function textColor(background) {
  const [r, g, b] = rgb(background).map((c) => c / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 ? "#111111" : "#ffffff";
}

/** Token text with whitespace made visible; an empty token shows as "∅". */
export function visibleText(token) {
  const shown = Array.from(String(token), (ch) => VISIBLE_WHITESPACE[ch] ?? ch).join("");
  return shown.length ? shown : "\u2205";
}

export function formatValue(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "none";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-2 || a >= 1e6) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el: host }) {
  const root = el("div", "essw-token-view");
  host.appendChild(root);
  let tokenNodes = [];

  function message(text, className) {
    const box = el("div", className, text);
    box.setAttribute("role", className === "essw-error" ? "alert" : "status");
    root.appendChild(box);
  }

  function markSelected() {
    const selected = model.get("selected");
    tokenNodes.forEach((node, t) => {
      const on = selected >= 1 && t === selected - 1;
      node.classList.toggle("essw-selected", on);
      if (node.hasAttribute("role")) node.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const status = root.querySelector(".essw-status");
    if (status) {
      const values = model.get("values") ?? [];
      const tokens = model.get("tokens") ?? [];
      status.textContent =
        selected >= 1 && selected <= tokens.length - 1
          ? `selected: split i=${selected}, after token ${selected - 1} "${visibleText(tokens[selected - 1])}", ` +
            `${model.get("value_label")} = ${formatValue(values[selected - 1])}`
          : "click a token to select the split right after it";
    }
  }

  function draw() {
    root.replaceChildren();
    tokenNodes = [];
    const error = model.get("error");
    if (error) return message(String(error), "essw-error");
    const tokens = model.get("tokens") ?? [];
    const values = model.get("values") ?? [];
    const label = String(model.get("value_label") ?? "");
    if (tokens.length === 0) return message("No tokens to show.", "essw-empty");
    if (values.length !== tokens.length) {
      return message(`Cannot colour ${tokens.length} tokens with ${values.length} values: pass one value per token.`, "essw-error");
    }
    const finite = values.filter((v) => v !== null && Number.isFinite(v));
    const vmaxTrait = model.get("vmax");
    const vmax = vmaxTrait > 0 ? vmaxTrait : Math.max(0, ...finite) || 1;
    const delimiters = new Set(model.get("delimiters") ?? []);

    // Legend: what the colour means and its range.
    const legend = el("div", "essw-legend");
    legend.appendChild(el("span", "essw-label", label));
    const scale = el("span", "essw-scale");
    scale.appendChild(el("span", "essw-min", "0"));
    const bar = el("span", "essw-bar");
    bar.style.background = `linear-gradient(to right, ${COLOR_STOPS.join(", ")})`;
    scale.appendChild(bar);
    scale.appendChild(el("span", "essw-max", formatValue(vmax)));
    legend.appendChild(scale);
    const none = el("span", "essw-null");
    const swatch = el("span", "essw-swatch");
    swatch.style.background = NULL_COLOR;
    none.appendChild(swatch);
    none.appendChild(document.createTextNode("no value (last token)"));
    legend.appendChild(none);
    if (delimiters.size) {
      const key = el("span", "essw-delim-key");
      key.appendChild(el("span", "essw-delim", "\u23d0"));
      key.appendChild(document.createTextNode("delimiter"));
      legend.appendChild(key);
    }
    root.appendChild(legend);

    const box = el("div", "essw-tokens");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", label);
    tokens.forEach((token, t) => {
      const v = values[t];
      const bg = colorFor(v, vmax);
      const node = el("span", "essw-token", visibleText(token));
      node.style.backgroundColor = bg;
      node.style.color = textColor(bg);
      node.dataset.index = String(t);
      const hasValue = v !== null && v !== undefined;
      let title = `token ${t}: ${JSON.stringify(String(token))}\n${label}: `;
      title += hasValue ? `${formatValue(v)} (split i=${t + 1})` : "none (no split after the last token)";
      node.setAttribute("title", title);
      if (delimiters.has(t)) node.classList.add("essw-delim");
      if (t < tokens.length - 1) {
        node.setAttribute("role", "button");
        node.setAttribute("tabindex", "0");
      }
      box.appendChild(node);
      tokenNodes.push(node);
      if (String(token).includes("\n")) box.appendChild(document.createElement("br"));
    });
    root.appendChild(box);
    root.appendChild(el("div", "essw-status"));
    markSelected();
  }

  function select(event) {
    const node = event.target.closest?.(".essw-token");
    if (!node || !root.contains(node)) return;
    const t = Number(node.dataset.index);
    const tokens = model.get("tokens") ?? [];
    if (!(t < tokens.length - 1)) return; // no split after the last token
    model.set("selected", t + 1);
    model.save_changes();
  }

  function onKey(event) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(event);
    }
  }

  root.addEventListener("click", select);
  root.addEventListener("keydown", onKey);
  const redrawOn = TRAITS.filter((name) => name !== "selected");
  redrawOn.forEach((name) => model.on(`change:${name}`, draw));
  model.on("change:selected", markSelected);
  draw();

  return () => {
    redrawOn.forEach((name) => model.off(`change:${name}`, draw));
    model.off("change:selected", markSelected);
    root.removeEventListener("click", select);
    root.removeEventListener("keydown", onKey);
  };
}

export default { render };
