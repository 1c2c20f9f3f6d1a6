// Booth: live training view on Booth's training nodes (loss curve, step, ETA), drawn on the node itself.
// Data arrives as "booth.progress" events sent by the Python side; text is drawn with fillText (never HTML).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const CURVE_HEIGHT = 90;
const runs = new Map(); // node id -> { losses, step, total, eta, text }

function formatEta(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(r).padStart(2, "0")}s`;
}

function drawCurve(ctx, node, run) {
  const x0 = 10, width = node.size[0] - 20, y0 = node.size[1] - CURVE_HEIGHT - 8;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(x0, y0, width, CURVE_HEIGHT);
  const finite = run.losses.filter(Number.isFinite);
  if (finite.length > 1) {
    const lo = Math.min(...finite), hi = Math.max(...finite), span = hi - lo || 1;
    ctx.strokeStyle = "#6cf";
    ctx.beginPath();
    run.losses.forEach((loss, i) => {
      if (!Number.isFinite(loss)) return;
      const x = x0 + (i / (run.losses.length - 1)) * width;
      const y = y0 + CURVE_HEIGHT - 14 - ((loss - lo) / span) * (CURVE_HEIGHT - 20);
      i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  const last = finite.length ? finite[finite.length - 1].toFixed(4) : "-";
  ctx.fillText(run.text ?? `step ${run.step}/${run.total}  loss ${last}  ETA ${formatEta(run.eta)}`, x0 + 4, y0 + CURVE_HEIGHT - 3);
  ctx.restore();
}

app.registerExtension({
  name: "booth.training_view",
  async setup() {
    api.addEventListener("booth.progress", ({ detail }) => {
      if (!detail || detail.node == null) return;
      const id = String(detail.node);
      const run = runs.get(id) ?? { losses: [], step: 0, total: 0, eta: 0 };
      if (detail.event === "start") Object.assign(run, { losses: [], step: 0, total: detail.total, text: null });
      if (detail.event === "step") {
        run.losses.push(Number(detail.loss));
        Object.assign(run, { step: detail.step, total: detail.total, eta: detail.eta, text: null });
      }
      if (detail.event === "message") run.text = String(detail.text).slice(0, 120);
      runs.set(id, run);
      const node = app.graph?.getNodeById?.(Number(detail.node));
      if (node) {
        if (node.size[1] < 260) node.setSize([node.size[0], node.size[1] + CURVE_HEIGHT + 16]);
        app.graph.setDirtyCanvas(true, false);
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("BoothTrain")) return;
    const draw = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      draw?.apply(this, arguments);
      const run = runs.get(String(this.id));
      if (run && !this.flags?.collapsed) drawCurve(ctx, this, run);
    };
  },
});
