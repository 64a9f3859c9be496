import { useEffect, useState } from "preact/hooks";
import { api, errorText, type FleetWorkstation, nextCursor, type Session } from "../api";
import { Problem, StateBadge, Table, Time } from "../components";
import { ago } from "../format";
import { href, route } from "../route";

const PAGE = 500;

/** Every workstation, silent and unguarded ones first; a click opens its timeline. */
export function Fleet({ session, params }: { session: Session; params: URLSearchParams }) {
  const group = params.get("group") ?? "";
  const [rows, setRows] = useState<FleetWorkstation[]>([]);
  const [groups, setGroups] = useState<string[]>([]);
  const [next, setNext] = useState<string | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [loaded, setLoaded] = useState(false);

  const load = async (after?: string) => {
    const query = { limit: PAGE, ...(group ? { group } : {}), ...(after ? { after } : {}) };
    const { data, error, response } = await api.GET("/api/v1/fleet", { params: { query } });
    if (!data) {
      setProblem(errorText(error, "the fleet could not be read"));
      return;
    }
    setProblem(undefined);
    setRows((old) => (after ? [...old, ...data] : data));
    setGroups((old) => [...new Set([...old, ...data.map((w) => w.group)])].sort());
    setNext(nextCursor(response));
    setLoaded(true);
  };

  useEffect(() => {
    void load();
  }, [group]);

  const now = Date.now();
  const silent = rows.filter((w) => w.state === "silent").length;
  const unguarded = rows.filter((w) => w.state === "guard_lost" || w.guard_connected === false).length;

  return (
    <>
      <h1>Fleet</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label for="fleet-group">Group</label>
        <select
          id="fleet-group"
          value={group}
          onChange={(e) => route("fleet", { group: (e.currentTarget as HTMLSelectElement).value })}
        >
          <option value="">All groups</option>
          {[...new Set([...groups, ...(group ? [group] : [])])].map((g) => (
            <option key={g} value={g}>
              {g}
            </option>
          ))}
        </select>
      </form>
      <Problem text={problem} />
      {loaded && (
        <p class="summary" aria-live="polite">
          {rows.length} workstation{rows.length === 1 ? "" : "s"} shown; {silent} silent, {unguarded} unguarded.
        </p>
      )}
      <Table
        caption="Workstations, silent and unguarded first"
        columns={["Workstation", "Group", "State", "Last heard from", "Backlog", "Agent", "Policy serial", "Findings"]}
      >
        {rows.map((w) => {
          const behind = w.group_policy_serial != null && w.policy_serial !== w.group_policy_serial;
          return (
            <tr key={w.id} class={w.state === "silent" || w.state === "guard_lost" ? "attention" : undefined}>
              <th scope="row">
                <a href={href("events", { workstation: w.id })} title="Open this workstation's timeline">
                  {w.hostname}
                </a>
                {w.hostname !== w.id && <span class="sub">{w.id}</span>}
              </th>
              <td>{w.group}</td>
              <td>
                <StateBadge state={w.state} />
                {w.state_since && w.state !== "silent" && (
                  <span class="sub">
                    since <Time at={w.state_since} zone={session.time_zone} />
                  </span>
                )}
              </td>
              <td>
                <Time at={w.last_seen} zone={session.time_zone} />
                <span class="sub">{ago(w.last_seen ? Date.parse(w.last_seen) : null, now)}</span>
              </td>
              <td class="num">{w.backlog ?? "—"}</td>
              <td>{w.agent_version}</td>
              <td class={behind ? "behind" : undefined}>
                {w.policy_serial ?? "—"}
                {w.group_policy_serial != null && <> of {w.group_policy_serial}</>}
                {behind && <span class="sub">not the group's latest</span>}
              </td>
              <td class="num">{w.findings > 0 ? <a href={href("reports")}>{w.findings}</a> : 0}</td>
            </tr>
          );
        })}
      </Table>
      {loaded && rows.length === 0 && <p>No workstation has enrolled{group ? ` in ${group}` : ""} yet.</p>}
      {next && (
        <button type="button" onClick={() => void load(next)}>
          Show more workstations
        </button>
      )}
    </>
  );
}
