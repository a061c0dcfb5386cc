// The commission's dashboard (/dashboard): draws the charts from the figures the server
// put in <script type="application/json" id="dash-data">. Only the ECharts parts used are
// imported (line, bar; grid, tooltip, legend; canvas), to keep the bundle small.
import "./dashboard.css";
import * as echarts from "echarts/core";
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([BarChart, LineChart, GridComponent, LegendComponent, TooltipComponent,
  CanvasRenderer]);

const COLORS = ["#0b5cad", "#c2410c", "#15803d", "#7c3aed", "#0e7490", "#a16207"];
// Tooltips drawn on the canvas: HTML tooltips would need inline styles the CSP refuses.
const tooltip = { trigger: "axis", renderMode: "richText" };
const grid = { left: 56, right: 56, top: 40, bottom: 32 };

function trend(d) {
  return {
    color: COLORS, tooltip, grid, legend: { top: 0 },
    xAxis: { type: "category", data: d.days },
    yAxis: [
      { type: "value", name: d.labels.studies },
      { type: "value", name: "%", min: 0, max: 100 },
    ],
    series: [
      { type: "bar", name: d.labels.on_time, data: d.on_time, stack: "s", color: "#0b5cad" },
      { type: "bar", name: d.labels.late, data: d.late, stack: "s", color: "#c2410c" },
      { type: "line", name: d.labels.share, data: d.share, yAxisIndex: 1, smooth: true,
        color: "#15803d" },
    ],
  };
}

function stacked(d) {
  return {
    color: COLORS, tooltip, grid, legend: { top: 0 },
    xAxis: { type: "category", data: d.x },
    yAxis: { type: "value" },
    series: d.series.map((s) => ({ type: "bar", stack: "all", name: s.name, data: s.data })),
  };
}

function ranking(d) {
  return {
    color: [COLORS[1]], tooltip, grid: { ...grid, left: 180 },
    xAxis: { type: "value", name: "%", max: 100 },
    yAxis: { type: "category", data: d.names, inverse: true },
    series: [{ type: "bar", name: d.label, data: d.values }],
  };
}

function bars(d) {
  return {
    color: [COLORS[0]], tooltip, grid: { ...grid, left: 140 },
    xAxis: { type: "value" },
    yAxis: { type: "category", data: d.names, inverse: true },
    series: [{ type: "bar", name: d.label, data: d.values }],
  };
}

function line(d) {
  return {
    color: [COLORS[4]], tooltip, grid,
    xAxis: { type: "category", data: d.x },
    yAxis: { type: "value", name: d.unit },
    series: [{ type: "line", name: d.label, data: d.values, areaStyle: {} }],
  };
}

const KINDS = { trend, stacked, ranking, bars, line };

// One chart per task: the first is on screen before the next is built (an ECharts
// instance costs tens of milliseconds), and the page answers input between them.
// ``data-charts`` counts the charts drawn, ``data-ready`` says all are.
function draw() {
  const source = document.getElementById("dash-data");
  if (!source) return;
  const data = JSON.parse(source.textContent || "{}");
  const pending = [...document.querySelectorAll("[data-chart]")];
  const charts = [];
  window.addEventListener("resize", () => charts.forEach((c) => c.resize()));
  const next = () => {
    const el = pending.shift();
    if (!el) {
      document.body.dataset.ready = "1";
      return;
    }
    const spec = data[el.dataset.chart];
    const make = spec && KINDS[spec.kind];
    if (make) {
      const chart = echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(make(spec));
      charts.push(chart);
      document.body.dataset.charts = String(charts.length);
    }
    setTimeout(next, 0);
  };
  next();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
else draw();
