"use strict";
// The status page: polls GET /status and renders it. Model names, reasons and errors come from
// backends and clients, so every string goes into the page as a text node, never as HTML.
(() => {
  const POLL_MS = 1500;
  const KEY_ITEM = "ollama-proxy.api-key";
  const PRIORITIES = ["critical", "high", "normal", "best-effort"];
  const $ = (id) => document.getElementById(id);

  let timer = 0;
  let busy = false;
  let waitingForKey = false;
  let lastBody = "";
  let shownModes = "";

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== ""));
    return node;
  }

  // sessionStorage: the key lives as long as the tab, is never sent anywhere but this origin's
  // Authorization header, and never appears in a URL (which would end up in access logs).
  function authHeaders() {
    const key = sessionStorage.getItem(KEY_ITEM);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function askForKey(refused) {
    waitingForKey = true;
    sessionStorage.removeItem(KEY_ITEM);
    $("key-error").textContent = refused ? "That key was refused." : "";
    $("key-form").hidden = false;
    $("content").hidden = true;
    $("forget-key").hidden = true;
    setHealth("needs a key", "warn");
    $("key-input").focus();
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      // A proxy that stops answering must not stall the polling for good.
      const response = await fetch("/status", { headers: authHeaders(), cache: "no-store",
        signal: AbortSignal.timeout(10000) });
      if (response.status === 401) {
        askForKey(Boolean(authHeaders().Authorization));
        return;
      }
      if (!response.ok) throw new Error(`/status answered ${response.status}`);
      const body = await response.text();
      if (body !== lastBody) {
        render(JSON.parse(body));
        lastBody = body;
      }
      $("updated").textContent = `updated ${clock(new Date())}`;
      $("updated").classList.remove("error");
    } catch (err) {
      $("updated").textContent = `cannot reach the proxy (${err.message}); retrying`;
      $("updated").classList.add("error");
      setHealth("unreachable", "bad");
    } finally {
      busy = false;
      if (!document.hidden && !waitingForKey) timer = setTimeout(refresh, POLL_MS);
    }
  }

  function setHealth(text, level) {
    $("health").textContent = text;
    $("health").className = `badge ${level}`;
  }

  function render(status) {
    $("key-form").hidden = true;
    $("content").hidden = false;
    $("forget-key").hidden = !sessionStorage.getItem(KEY_ITEM);
    $("version").textContent = `v${status.version}`;
    setHealth(status.status, status.status === "ok" ? "ok" : "warn");
    renderMode(status.efficiency);
    $("backends").replaceChildren(...status.backends.map(backendCard));
    renderContext(status.context);
    $("recent").tBodies[0].replaceChildren(...(status.recent.length ? status.recent.map(decisionRow)
      : [el("tr", {}, el("td", { colSpan: 12, className: "muted" }, "No requests yet."))]));
  }

  function renderMode(efficiency) {
    const modes = efficiency.modes.join(",");
    if (modes !== shownModes) {
      shownModes = modes;
      $("modes").replaceChildren(...efficiency.modes.map((mode) =>
        el("button", { type: "button", value: mode, onclick: () => setMode(mode) }, mode)));
    }
    for (const button of $("modes").children) {
      button.setAttribute("aria-pressed", String(button.value === efficiency.mode));
    }
    $("effective-mode").textContent = efficiency.effective_mode;
    $("mode-reason").textContent = efficiency.reason;
  }

  async function setMode(mode) {
    const buttons = [...$("modes").children];
    buttons.forEach((b) => { b.disabled = true; });
    $("mode-error").textContent = "";
    try {
      const response = await fetch("/efficiency", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ mode }),
      });
      if (response.status === 401) {
        askForKey(true);
        return;
      }
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(typeof body.error === "string" ? body.error : `answered ${response.status}`);
      }
      lastBody = "";
      refresh();
    } catch (err) {
      $("mode-error").textContent = `Could not set the mode: ${err.message}`;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function backendState(b) {
    if (!b.enabled) return ["disabled", "off"];
    if (!b.reachable) return ["unreachable", "bad"];
    if (b.breaker !== "closed") return [`breaker ${b.breaker}`, "warn"];
    return ["healthy", "ok"];
  }

  function backendCard(b) {
    const [state, level] = backendState(b);
    const t = b.thermal;
    const heat = t.temp_c === null ? t.level : `${t.level}, ${Math.round(t.temp_c)} °C`;
    const c = b.characteristics;
    return el("article", { className: `card ${level}`, title: b.endpoint },
      el("header", {},
        el("h3", {}, b.name),
        el("span", { className: `badge ${level}` }, state)),
      el("p", { className: "muted" }, `${b.id} · ${b.hardware} · ${b.type}${b.version ? ` ${b.version}` : ""}`),
      el("dl", { className: "facts" },
        el("dt", {}, "power"), el("dd", {}, `${c.power_watts} W`),
        el("dt", {}, "thermal"), el("dd", { className: `heat-${t.level}`, title: t.reason }, heat),
        el("dt", {}, "in flight"), el("dd", {}, `${b.in_flight} / ${c.max_concurrent}`),
        el("dt", {}, "breaker"), el("dd", {}, b.consecutive_failures
          ? `${b.breaker} (${b.consecutive_failures} failures)` : b.breaker)),
      el("div", { className: "queue", title: "waiting per priority" },
        ...PRIORITIES.map((p) => el("span", { className: b.queue[p] ? "busy" : "" },
          el("b", {}, String(b.queue[p])), p))),
      modelsTable(b),
      b.last_error ? el("p", { className: "error" }, b.last_error) : null);
  }

  function modelsTable(b) {
    const loaded = new Map(b.loaded.map((m) => [m.model, m.context_length]));
    const names = [...new Set([...(b.models ?? []), ...loaded.keys()])];
    if (!names.length) {
      return el("p", { className: "muted" }, b.models === null ? "models not discovered yet" : "no models");
    }
    return el("table", { className: "models" },
      el("thead", {}, el("tr", {},
        el("th", {}, "model"), el("th", { className: "num", title: "num_ctx it is loaded with" }, "loaded"),
        el("th", { className: "num", title: "learned time to first token" }, "TTFT ms"),
        el("th", { className: "num", title: "learned tokens per second" }, "tok/s"))),
      el("tbody", {}, ...names.map((name) => {
        const learned = b.learned_latency[name];
        const ctx = loaded.get(name);
        return el("tr", { className: ctx === undefined ? "" : "loaded" },
          // A break after the tag's colon rather than inside a name, when the card is narrow.
          el("td", { title: name }, name.replace(/:latest$/, "").replace(":", ":\u200b")),
          el("td", { className: "num" }, ctx === undefined ? "—" : ctx === null ? "loaded" : String(ctx)),
          el("td", { className: "num", title: learned ? `${learned.samples} samples` : "not observed yet" },
            learned ? String(Math.round(learned.ttft_ms)) : "—"),
          el("td", { className: "num" }, learned && learned.tokens_per_s !== null ? String(learned.tokens_per_s) : "—"));
      })));
  }

  function renderContext(ctx) {
    const parts = [`${ctx.decisions} sizing decisions`, `${ctx.truncations_detected} truncations detected`,
      `bare paths: ${ctx.default_route}`, `sizes ${ctx.sizes.join(" / ")}`];
    if (ctx.exact_tokenizers.length) parts.push(`exact tokenizers: ${ctx.exact_tokenizers.join(", ")}`);
    $("context-stats").textContent = parts.join(" · ");
  }

  function decisionRow(d) {
    const failed = d.status >= 400;
    return el("tr", { className: failed ? "failed" : "" },
      el("td", {}, clock(new Date(d.at * 1000))),
      el("td", { className: "mono", title: d.request_id }, d.request_id.slice(0, 8)),
      el("td", { className: "asked", title: d.model ?? "" },
        el("span", { className: "muted" }, d.operation, d.dialect === "ollama" ? "" : ` (${d.dialect})`),
        " ", d.model ?? ""),
      el("td", {}, d.priority),
      el("td", {}, d.backend ?? "—"),
      el("td", { className: "num", title: d.num_ctx === null ? "not sized: sent as the client asked" : "" },
        d.num_ctx === null ? "—" : String(d.num_ctx)),
      el("td", { className: "num" }, d.input_tokens === null ? "—" : String(d.input_tokens)),
      el("td", {}, d.sizing_reason ?? "—"),
      el("td", { className: "reason" }, d.routing_reason ?? "",
        d.error ? el("div", { className: "error", title: d.error }, d.error) : null),
      el("td", { className: "num" }, String(d.status)),
      el("td", { className: "num" }, ms(d.queued_ms)),
      el("td", { className: "num" }, ms(d.duration_ms)));
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hourCycle: "h23" });
  }

  function ms(value) {
    return value >= 1000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("key-input").value);
    $("key-input").value = "";
    waitingForKey = false;
    lastBody = "";
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    askForKey(false);
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else if (!waitingForKey) refresh();
  });
  refresh();
})();
