import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { MatrixController, MatrixElement } from "chartjs-chart-matrix";
import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText, type Schemas, type Session } from "../api";
import { Problem, Section, Table } from "../components";
import { formatDay, hourIn } from "../format";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
  Legend,
  MatrixController,
  MatrixElement,
);
// Drawn at once: no motion for those who are bothered by it, and what a screenshot shows is the data.
Chart.defaults.animation = false;

type Charts = Schemas["Charts"];
const HOURS = Array.from({ length: 24 }, (_, h) => String(h));

/** A chart on a canvas, drawn again when its configuration changes; its words for screen readers. */
function Canvas({ label, config }: { label: string; config: () => ConstructorParameters<typeof Chart>[1] }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, config());
    return () => chart.destroy();
  }, [config]);
  return (
    <div class="chart">
      <canvas ref={canvas} role="img" aria-label={label} />
    </div>
  );
}

/** Locks and unlocks folded into hours of the day (in the collector's zone) per group. */
export function heatMap(rows: Charts["locks_per_hour"], zone: string) {
  const cells = new Map<string, { locks: number; unlocks: number }>();
  const groups = new Set<string>();
  for (const r of rows) {
    const hour = hourIn(Date.parse(r.hour), zone);
    const key = `${r.group}\u0000${hour}`;
    const cell = cells.get(key) ?? { locks: 0, unlocks: 0 };
    cell.locks += r.locks;
    cell.unlocks += r.unlocks;
    cells.set(key, cell);
    groups.add(r.group);
  }
  const data = [...cells.entries()].map(([key, c]) => {
    const [group = "", hour = "0"] = key.split("\u0000");
    return { x: hour, y: group, v: c.locks + c.unlocks, locks: c.locks, unlocks: c.unlocks };
  });
  return { groups: [...groups].sort(), data, max: Math.max(1, ...data.map((d) => d.v)) };
}

export function Charts({ session }: { session: Session }) {
  const zone = session.time_zone;
  const [days, setDays] = useState(7);
  const [group, setGroup] = useState("");
  const [charts, setCharts] = useState<Charts | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);

  useEffect(() => {
    const until = new Date();
    const since = new Date(until.getTime() - days * 24 * 3600 * 1000);
    void api
      .GET("/api/v1/charts", {
        params: { query: { since: since.toISOString(), until: until.toISOString(), ...(group ? { group } : {}) } },
      })
      .then(({ data, error }) => {
        setProblem(data ? undefined : errorText(error, "the charts could not be read"));
        setCharts(data);
      });
  }, [days, group]);

  const heat = charts ? heatMap(charts.locks_per_hour, zone) : undefined;
  return (
    <>
      <h1>Charts</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="c-days">Period</label>
          <select
            id="c-days"
            value={String(days)}
            onChange={(e) => setDays(Number((e.currentTarget as HTMLSelectElement).value))}
          >
            <option value="1">Last 24 hours</option>
            <option value="7">Last 7 days</option>
            <option value="30">Last 30 days</option>
            <option value="90">Last 90 days</option>
          </select>
        </div>
        <div>
          <label for="c-group">Group</label>
          <input
            id="c-group"
            value={group}
            placeholder="all groups"
            onChange={(e) => setGroup((e.currentTarget as HTMLInputElement).value.trim())}
          />
        </div>
      </form>
      <Problem text={problem} />
      {charts && heat && (
        <>
          <Section title="Locks and unlocks per hour of the day, per ward">
            <p class="hint">Hours in {zone}. Darker: more locks and unlocks; the busy hours of each ward.</p>
            {heat.data.length === 0 ? (
              <p>No lock or unlock in this period.</p>
            ) : (
              <Canvas
                label={`Heat map of locks and unlocks per hour for ${heat.groups.length} groups`}
                config={() =>
                  ({
                    type: "matrix",
                    data: {
                      datasets: [
                        {
                          label: "Locks and unlocks",
                          data: heat.data,
                          backgroundColor: (c: { raw?: unknown }) => {
                            const v = (c.raw as { v?: number } | undefined)?.v ?? 0;
                            return `rgba(22, 84, 160, ${0.08 + (0.92 * v) / heat.max})`;
                          },
                          width: ({ chart }: { chart: Chart }) => (chart.chartArea?.width ?? 0) / 24 - 2,
                          height: ({ chart }: { chart: Chart }) =>
                            (chart.chartArea?.height ?? 0) / heat.groups.length - 2,
                        },
                      ],
                    },
                    options: {
                      maintainAspectRatio: false,
                      plugins: {
                        legend: { display: false },
                        tooltip: {
                          callbacks: {
                            label: (c: { raw: unknown }) => {
                              const d = c.raw as { x: string; y: string; locks: number; unlocks: number };
                              return `${d.y}, ${d.x}:00–${Number(d.x) + 1}:00: ${d.locks} locks, ${d.unlocks} unlocks`;
                            },
                          },
                        },
                      },
                      scales: {
                        x: {
                          type: "category",
                          labels: HOURS,
                          offset: true,
                          title: { display: true, text: "Hour of the day" },
                        },
                        y: { type: "category", labels: heat.groups, offset: true },
                      },
                    },
                  }) as never
                }
              />
            )}
          </Section>

          <Section title="From the last input to the lock, against the timeout">
            <p class="hint">
              Idle locks by how long after their timeout they came, as each guard measured it. A guard that locks on
              time puts nearly all in the first bars.
            </p>
            <Canvas
              label={`Bar chart: ${charts.lock_delay.map((b) => `${b.locks} locks ${b.label}`).join(", ")}`}
              config={() => ({
                type: "bar",
                data: {
                  labels: charts.lock_delay.map((b) => b.label),
                  datasets: [
                    { label: "Idle locks", data: charts.lock_delay.map((b) => b.locks), backgroundColor: "#1654a0" },
                  ],
                },
                options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
              })}
            />
          </Section>

          <Section title="Unattended minutes per workstation">
            <p class="hint">Minutes from the warning to the lock, per day: a screen open with nobody at it.</p>
            <UnattendedTable rows={charts.unattended} zone={zone} />
          </Section>

          <Section title="Emergency accesses per week">
            <Canvas
              label={`Line chart of emergency accesses per week: ${charts.emergency_per_week.map((w) => w.count).join(", ") || "none"}`}
              config={() => ({
                type: "line",
                data: {
                  labels: charts.emergency_per_week.map((w) => `week of ${formatDay(Date.parse(w.week), zone)}`),
                  datasets: [
                    {
                      label: "Emergency accesses",
                      data: charts.emergency_per_week.map((w) => w.count),
                      borderColor: "#a0162b",
                      backgroundColor: "#a0162b",
                    },
                  ],
                },
                options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
              })}
            />
            {charts.emergency_per_week.length === 0 && <p>No emergency access in this period.</p>}
          </Section>
        </>
      )}
    </>
  );
}

function UnattendedTable({ rows, zone }: { rows: Charts["unattended"]; zone: string }) {
  if (rows.length === 0) return <p>No warning ran out into a lock in this period.</p>;
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const workstations = [...new Set(rows.map((r) => r.workstation))];
  const max = Math.max(1, ...rows.map((r) => r.minutes));
  const minutes = (ws: string, day: string) => rows.find((r) => r.workstation === ws && r.day === day)?.minutes ?? 0;
  return (
    <Table
      caption="Unattended minutes per workstation and day"
      columns={["Workstation", ...days.map((d) => formatDay(Date.parse(d), "UTC"))]}
    >
      {workstations.map((ws) => (
        <tr key={ws}>
          <th scope="row">{ws}</th>
          {days.map((d) => {
            const m = minutes(ws, d);
            const level = Math.ceil((4 * m) / max);
            return (
              <td key={d} class={`num heat-${level}`}>
                {m}
              </td>
            );
          })}
        </tr>
      ))}
    </Table>
  );
}
