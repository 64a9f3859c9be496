import { useEffect, useRef, useState } from "preact/hooks";
import { api, errorText, type EventOut, type Schemas, type Session } from "../api";
import { Problem, Table, Time } from "../components";
import { kindWords, localInputToRfc3339 } from "../format";
import { AUDIT_KINDS } from "../kinds";
import { href, route } from "../route";

const FILTERS = ["user", "workstation", "group", "kind", "outcome", "since", "until"] as const;
type Filter = (typeof FILTERS)[number];
const PAGE = 100;
/** An export follows every page of what the filters show, up to this many entries. */
const EXPORT_MAX = 200_000;

type Query = Partial<Record<Filter | "after", string>> & { limit?: number };

function queryOf(params: URLSearchParams, zone: string): Query {
  const q: Query = {};
  for (const f of FILTERS) {
    const v = params.get(f)?.trim();
    if (!v) continue;
    if (f === "since" || f === "until") {
      const t = localInputToRfc3339(v, zone);
      if (t) q[f] = t;
    } else {
      q[f] = v;
    }
  }
  return q;
}

/** One entry's details as text: every value shown as the workstation sent it, never as markup. */
function Details({ details }: { details: unknown }) {
  if (!details || typeof details !== "object") return null;
  const pairs = Object.entries(details as Record<string, unknown>);
  if (pairs.length === 0) return null;
  return (
    <dl class="details">
      {pairs.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{typeof v === "string" ? v : JSON.stringify(v)}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Events({ session, params }: { session: Session; params: URLSearchParams }) {
  const zone = session.time_zone;
  const query = queryOf(params, zone);
  const key = params.toString();
  const [rows, setRows] = useState<EventOut[]>([]);
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [next, setNext] = useState<number | null | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [live, setLive] = useState(false);
  const [status, setStatus] = useState<string>("");
  const tail = useRef<EventSource | null>(null);

  const load = async (after: string | undefined) => {
    const q = { ...query, limit: PAGE, ...(after ? { after: Number(after) } : {}) };
    const { data, error } = await api.GET("/api/v1/events", { params: { query: q as never } });
    if (!data) {
      setProblem(errorText(error, "the events could not be read"));
      setRows([]);
      return;
    }
    // The answer's JSON form (the same operation also answers CSV and FHIR).
    const page = data as Schemas["EventPage"];
    setProblem(undefined);
    setRows(page.events);
    setNext(page.next);
  };

  useEffect(() => {
    setCursors([undefined]);
    void load(undefined);
    return () => stopTail();
  }, [key]);

  const stopTail = () => {
    tail.current?.close();
    tail.current = null;
    setLive(false);
  };

  const startTail = () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
    const source = new EventSource(`/api/v1/events/stream?${q.toString()}`);
    source.addEventListener("audit", (message) => {
      const event = JSON.parse((message as MessageEvent<string>).data) as EventOut;
      setRows((old) => [event, ...old].slice(0, 500));
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused on reconnecting: the session ended. Any call now takes the page to sign-in.
        setLive(false);
        setStatus("The live tail stopped.");
        void api.GET("/api/v1/fleet", { params: { query: { limit: 1 } } });
      } else {
        setStatus("The live tail was interrupted; it reconnects by itself.");
      }
    };
    source.onopen = () => setStatus("Live: new entries appear at the top as the collector receives them.");
    tail.current = source;
    setLive(true);
  };

  const submit = (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const values: Record<string, string> = {};
    for (const f of FILTERS) values[f] = String(form.get(f) ?? "").trim();
    route("events", values);
  };

  const exportAs = async (format: "csv" | "fhir") => {
    const accept = format === "csv" ? "text/csv" : "application/fhir+json";
    setStatus(`Exporting as ${format.toUpperCase()}…`);
    const parts: string[] = [];
    const fhirEntries: unknown[] = [];
    let after: string | undefined;
    let count = 0;
    for (;;) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries({ ...query, limit: "10000", ...(after ? { after } : {}) })) {
        if (v !== undefined) q.set(k, String(v));
      }
      const response = await fetch(`/api/v1/events?${q.toString()}`, {
        headers: { Accept: accept },
        credentials: "same-origin",
      });
      if (!response.ok) {
        setStatus(`The export failed: ${response.status}`);
        return;
      }
      const text = await response.text();
      if (format === "csv") {
        parts.push(parts.length === 0 ? text : text.slice(text.indexOf("\n") + 1));
        count += Math.max(0, text.split("\n").length - 2);
      } else {
        const bundle = JSON.parse(text) as { entry?: unknown[] };
        fhirEntries.push(...(bundle.entry ?? []));
        count = fhirEntries.length;
      }
      after = response.headers.get("x-next-after") ?? undefined;
      if (!after || count >= EXPORT_MAX) break;
    }
    const body =
      format === "csv"
        ? parts.join("")
        : JSON.stringify({ resourceType: "Bundle", type: "collection", total: fhirEntries.length, entry: fhirEntries });
    const blob = new Blob([body], { type: format === "csv" ? "text/csv" : "application/fhir+json" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `wardlock-events.${format === "csv" ? "csv" : "fhir.json"}`;
    document.body.append(link);
    link.click();
    link.remove();
    setStatus(
      `Exported ${count} entries as ${format.toUpperCase()}${count >= EXPORT_MAX ? " (the first ones; narrow the filters for the rest)" : ""}.`,
    );
  };

  const page = cursors.length;
  return (
    <>
      <h1>Events</h1>
      <form class="filters" onSubmit={submit} key={key}>
        <div>
          <label for="f-user">User</label>
          <input id="f-user" name="user" defaultValue={params.get("user") ?? ""} spellcheck={false} />
        </div>
        <div>
          <label for="f-workstation">Workstation</label>
          <input
            id="f-workstation"
            name="workstation"
            defaultValue={params.get("workstation") ?? ""}
            spellcheck={false}
          />
        </div>
        <div>
          <label for="f-group">Group</label>
          <input id="f-group" name="group" defaultValue={params.get("group") ?? ""} spellcheck={false} />
        </div>
        <div>
          <label for="f-kind">Kind</label>
          <select id="f-kind" name="kind" value={params.get("kind") ?? ""}>
            <option value="">Any kind</option>
            {AUDIT_KINDS.map((k) => (
              <option key={k} value={k}>
                {kindWords(k)}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="f-outcome">Outcome</label>
          <select id="f-outcome" name="outcome" value={params.get("outcome") ?? ""}>
            <option value="">Any outcome</option>
            <option value="failure">Failures and refusals</option>
            <option value="success">Everything else</option>
          </select>
        </div>
        <div>
          <label for="f-since">From ({zone})</label>
          <input id="f-since" name="since" type="datetime-local" defaultValue={params.get("since") ?? ""} />
        </div>
        <div>
          <label for="f-until">Until ({zone})</label>
          <input id="f-until" name="until" type="datetime-local" defaultValue={params.get("until") ?? ""} />
        </div>
        <div class="actions">
          <button type="submit">Show</button>
          <a href={href("events")}>Clear</a>
        </div>
      </form>
      <div class="toolbar">
        <button type="button" onClick={() => void exportAs("csv")}>
          Export CSV
        </button>
        <button type="button" onClick={() => void exportAs("fhir")}>
          Export FHIR
        </button>
        {live ? (
          <button type="button" onClick={stopTail} aria-pressed="true">
            Stop live tail
          </button>
        ) : (
          <button type="button" onClick={startTail} aria-pressed="false">
            Live tail
          </button>
        )}
        <span role="status" class="status">
          {status}
        </span>
      </div>
      <Problem text={problem} />
      <Table
        caption="Audit events in the order the collector received them"
        columns={["Time", "Workstation", "Seq", "Kind", "User", "Details"]}
      >
        {rows.map((e) => (
          <tr key={e.id}>
            <td>
              <Time at={e.time} zone={zone} />
            </td>
            <td>
              <a href={href("events", { workstation: e.workstation })}>{e.workstation}</a>
            </td>
            <td class="num">{e.seq}</td>
            <td>
              <span class={`kind kind-${e.kind}`}>{kindWords(e.kind)}</span>
            </td>
            <td>{e.user ? <a href={href("events", { user: e.user })}>{e.user}</a> : "—"}</td>
            <td>
              <Details details={e.details} />
            </td>
          </tr>
        ))}
      </Table>
      {rows.length === 0 && !problem && <p>No entries match these filters.</p>}
      {!live && (
        <nav class="pager" aria-label="Pages of events">
          <button
            type="button"
            disabled={page <= 1}
            onClick={() => {
              const previous = cursors.slice(0, -1);
              setCursors(previous);
              void load(previous[previous.length - 1]);
            }}
          >
            Previous page
          </button>
          <span>Page {page}</span>
          <button
            type="button"
            disabled={next == null}
            onClick={() => {
              const after = String(next);
              setCursors([...cursors, after]);
              void load(after);
            }}
          >
            Next page
          </button>
        </nav>
      )}
    </>
  );
}
