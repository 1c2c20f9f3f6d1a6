// Booth: live training view on Booth's training nodes: loss curve, step / loss / ETA line, latest sample.
// Data arrives as "booth.progress" events sent by the Python side (nodes/comfy_bridge.py ComfyProgress,
// nodes/ui.py sample_event). Text goes in through textContent and fillText only, images only as JPEG
// or PNG data URLs: nothing from the server is ever parsed as HTML.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "booth.progress";
const CURVE_HEIGHT = 110;
const SAMPLE_HEIGHT = 160;
const IMAGE_DATA_URLS = ["data:image/jpeg;base64,", "data:image/png;base64,"];
const runs = new Map(); // execution id of a node -> { losses, step, total, eta, text, sample, sampleStep, done }

function isTrainingNode(name) {
  return typeof name === "string" && name.startsWith("BoothTrain");
}

function newRun() {
  return { losses: [], step: 0, total: 0, eta: null, text: "", sample: null, sampleStep: 0, done: false };
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(r).padStart(2, "0")}s`;
}

function lastFinite(values) {
  for (let i = values.length - 1; i >= 0; i--) if (Number.isFinite(values[i])) return values[i];
  return undefined;
}

function statusLine(run) {
  if (run.text) return run.text;
  if (!run.total) return "Booth: the loss curve appears here while training runs.";
  const parts = [`step ${run.step}/${run.total}`];
  const loss = lastFinite(run.losses);
  if (loss !== undefined) parts.push(`loss ${loss.toFixed(4)}`);
  parts.push(run.done ? "done" : run.eta == null ? "ETA …" : `ETA ${formatDuration(run.eta)}`);
  return parts.join("  ·  ");
}

// Mean of the last `window` values at each point: the raw per-step loss of diffusion training is noisy.
function smoothed(values, window) {
  const out = [];
  let sum = 0, count = 0;
  values.forEach((value, i) => {
    if (Number.isFinite(value)) { sum += value; count += 1; }
    const old = values[i - window];
    if (i >= window && Number.isFinite(old)) { sum -= old; count -= 1; }
    out.push(count ? sum / count : NaN);
  });
  return out;
}

function drawCurve(canvas, losses) {
  const scale = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * scale));
  const height = Math.max(1, Math.round(canvas.clientHeight * scale));
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
  const ctx = canvas.getContext("2d");
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  const w = canvas.clientWidth, h = canvas.clientHeight, pad = 6;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(0, 0, w, h);
  const finite = losses.filter(Number.isFinite);
  if (finite.length < 2) return;
  const lo = Math.min(...finite), hi = Math.max(...finite), span = hi - lo || 1;
  const x = (i) => pad + (i / (losses.length - 1)) * (w - 2 * pad);
  const y = (v) => h - pad - ((v - lo) / span) * (h - 2 * pad - 12);
  const line = (values, style) => {
    ctx.strokeStyle = style;
    ctx.beginPath();
    let pen = false;
    values.forEach((v, i) => {
      if (!Number.isFinite(v)) { pen = false; return; }
      pen ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v));
      pen = true;
    });
    ctx.stroke();
  };
  line(losses, "rgba(102,204,255,0.35)");
  line(smoothed(losses, Math.max(1, Math.round(losses.length / 20))), "#6cf");
  ctx.fillStyle = "#bbb";
  ctx.font = "10px sans-serif";
  ctx.fillText(`max ${hi.toPrecision(3)}  min ${lo.toPrecision(3)}`, pad, 11);
}

function render(node) {
  const view = node.boothLiveView;
  if (!view) return;
  const run = runs.get(view.key()) ?? newRun();
  view.status.textContent = statusLine(run);
  drawCurve(view.canvas, run.losses);
  if (run.sample && view.sample.getAttribute("src") !== run.sample) view.sample.src = run.sample;
  view.sample.style.display = run.sample ? "block" : "none";
  view.caption.textContent = run.sample ? `sample at step ${run.sampleStep}` : "";
}

function addLiveView(node) {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;height:100%;box-sizing:border-box;"
    + "font:11px sans-serif;color:#ddd;overflow:hidden";
  const status = document.createElement("div");
  // Fixed-size rows keep their height; only the sample shrinks when the node is short.
  status.style.cssText = "flex:none;white-space:nowrap;overflow:hidden;text-overflow:ellipsis";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = `width:100%;height:${CURVE_HEIGHT}px;flex:none`;
  const sample = document.createElement("img");
  sample.alt = "latest training sample";
  sample.style.cssText = "display:none;flex:1 1 0;min-height:0;width:100%;object-fit:contain";
  const caption = document.createElement("div");
  caption.style.cssText = "flex:none";
  root.append(status, canvas, sample, caption);
  const widget = node.addDOMWidget("booth_live_view", "booth_live_view", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => CURVE_HEIGHT + 40 + (runs.get(String(node.id))?.sample ? SAMPLE_HEIGHT : 0),
  });
  widget.serialize = false; // not an input: never written into the workflow or the prompt
  node.boothLiveView = { status, canvas, sample, caption, key: () => String(node.id) };
  const observer = new ResizeObserver(() => render(node));
  observer.observe(canvas);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    observer.disconnect();
    return onRemoved?.apply(this, arguments);
  };
  render(node);
}

// Execution ids are "7" for a top-level node and "12:7" for node 7 inside the subgraph of node 12.
function nodeByExecutionId(id) {
  let graph = app.rootGraph ?? app.graph, node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? null;
    graph = node?.subgraph;
  }
  return node;
}

function onProgress({ detail }) {
  if (!detail || detail.node == null) return;
  const id = String(detail.node);
  const key = id.split(":").pop();
  const run = runs.get(key) ?? newRun();
  switch (detail.event) {
    case "start":
      Object.assign(run, newRun(), { total: Number(detail.total) || 0 });
      break;
    case "step":
      run.losses.push(Number(detail.loss));
      Object.assign(run, { step: detail.step, total: detail.total, eta: detail.eta, text: "" });
      break;
    case "sample":
      if (typeof detail.image === "string" && IMAGE_DATA_URLS.some((prefix) => detail.image.startsWith(prefix))) {
        Object.assign(run, { sample: detail.image, sampleStep: detail.step });
      }
      break;
    case "message":
      run.text = String(detail.text ?? "").slice(0, 200);
      break;
    default:
      return;
  }
  runs.set(key, run);
  const node = nodeByExecutionId(id);
  if (node?.boothLiveView) {
    render(node);
    node.setDirtyCanvas?.(true, true);
  }
}

app.registerExtension({
  name: "booth.training_view",
  async setup() {
    api.addEventListener(EVENT, onProgress);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isTrainingNode(nodeData?.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addLiveView(this);
      return result;
    };
    // The node's own result text ("name.safetensors: N steps in S s") ends the live view; the final
    // loss plot it returns as "ui" images stays on the node through ComfyUI's usual image preview.
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const key = String(this.id);
      const run = runs.get(key) ?? newRun();
      run.done = true;
      const summary = Array.isArray(message?.text) ? String(message.text[0] ?? "") : "";
      const loss = lastFinite(run.losses);
      run.text = summary ? summary + (loss === undefined ? "" : `  ·  final loss ${loss.toFixed(4)}`) : "";
      runs.set(key, run);
      render(this);
    };
  },
});
