import { useEffect, useState } from "preact/hooks";
import { api, type EmergencyOut, errorText, nextCursor, type Schemas, type Session } from "../api";
import { Problem, Section, Table, Time } from "../components";
import { kindWords } from "../format";
import { ESCALATION_KINDS } from "../kinds";
import { href } from "../route";

/** A paged list report: the first page, and more on request. */
function useList<T>(
  read: (after?: string) => Promise<{ data?: T[] | undefined; error?: unknown; response: Response }>,
  deps: unknown[] = [],
) {
  const [rows, setRows] = useState<T[]>([]);
  const [next, setNext] = useState<string | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const load = async (after?: string) => {
    const { data, error, response } = await read(after);
    if (!data) {
      setProblem(errorText(error, "this report could not be read"));
      return;
    }
    setProblem(undefined);
    setRows((old) => (after ? [...old, ...data] : data));
    setNext(nextCursor(response));
  };
  useEffect(() => {
    void load();
  }, deps);
  const more = next ? (
    <button type="button" onClick={() => void load(next)}>
      Show more
    </button>
  ) : null;
  return { rows, problem, more, reload: () => load() };
}

const page = (after?: string) => ({ limit: 200, ...(after ? { after } : {}) });

export function Reports({ session }: { session: Session }) {
  const zone = session.time_zone;
  const failed = useList((after) => api.GET("/api/v1/reports/failed", { params: { query: page(after) } }));
  const emergency = useList((after) => api.GET("/api/v1/reports/emergency", { params: { query: page(after) } }));
  const stale = useList((after) => api.GET("/api/v1/reports/stale", { params: { query: page(after) } }));
  const chain = useList((after) => api.GET("/api/v1/reports/chain", { params: { query: page(after) } }));
  const conflicts = useList((after) => api.GET("/api/v1/reports/conflicts", { params: { query: page(after) } }));
  const escalations = useList<Schemas["EventOut"]>(async (after) => {
    const answer = await api.GET("/api/v1/events", {
      params: { query: { kind: ESCALATION_KINDS.join(","), limit: 200, ...(after ? { after: Number(after) } : {}) } },
    });
    const events = answer.data as Schemas["EventPage"] | undefined;
    return { data: events?.events, error: answer.error, response: answer.response };
  });

  return (
    <>
      <h1>Reports</h1>
      <p class="hint">The last 30 days unless a report says otherwise.</p>
      <Section title="Failed attempts and lockouts">
        <Problem text={failed.problem} />
        <Table
          caption="Failed unlock attempts and lockouts per user and workstation, most first"
          columns={["User", "Workstation", "Failed attempts", "Lockouts", "Latest"]}
        >
          {failed.rows.map((f) => (
            <tr key={`${f.user}/${f.workstation}`}>
              <td>
                <a href={href("events", { user: f.user, outcome: "failure" })}>{f.user}</a>
              </td>
              <td>
                <a href={href("events", { workstation: f.workstation })}>{f.workstation}</a>
              </td>
              <td class="num">{f.failed_attempts}</td>
              <td class="num">{f.lockouts}</td>
              <td>
                <Time at={f.last} zone={zone} />
              </td>
            </tr>
          ))}
        </Table>
        {failed.rows.length === 0 && <p>No failed attempts.</p>}
        {failed.more}
      </Section>

      <Section title="Emergency accesses">
        <Problem text={emergency.problem} />
        <Table
          caption="Break-glass accesses with their reasons and reviews"
          columns={["Time", "Workstation", "User", "Reason", "Review"]}
        >
          {emergency.rows.map((e) => (
            <EmergencyRow key={e.id} access={e} zone={zone} reviewed={() => void emergency.reload()} />
          ))}
        </Table>
        {emergency.rows.length === 0 && <p>No emergency access.</p>}
        {emergency.more}
      </Section>

      <Section title="Stale accounts">
        <p class="hint">Directory users with no unlock, hold, break-glass, sign-out or approval for 90 days.</p>
        <Problem text={stale.problem} />
        <Table caption="Stale directory accounts" columns={["User", "Name", "Role", "Last used"]}>
          {stale.rows.map((u) => (
            <tr key={u.id}>
              <td>{u.id}</td>
              <td>{u.display_name}</td>
              <td>{u.role}</td>
              <td>{u.last_unlock ? <Time at={u.last_unlock} zone={zone} /> : "never"}</td>
            </tr>
          ))}
        </Table>
        {stale.rows.length === 0 && <p>No stale account.</p>}
        {stale.more}
      </Section>

      <Section title="Chain findings and enrollment conflicts">
        <Problem text={chain.problem ?? conflicts.problem} />
        <Table
          caption="Chain findings: altered, broken, rewritten, truncated logs and refused enrollments"
          columns={["Found", "Workstation", "Seq", "Finding", "Detail"]}
        >
          {chain.rows.map((f) => (
            <tr key={`${f.workstation}/${f.seq}/${f.kind}`}>
              <td>
                <Time at={f.found} zone={zone} />
              </td>
              <td>{f.workstation}</td>
              <td class="num">{f.seq}</td>
              <td>{kindWords(f.kind)}</td>
              <td class="pre">{f.detail}</td>
            </tr>
          ))}
        </Table>
        {chain.rows.length === 0 && <p>No chain finding.</p>}
        {chain.more}
        {conflicts.rows.length > 0 && (
          <Table
            caption="Two versions of one entry: what was stored and what came later"
            columns={["Workstation", "Seq", "Stored", "Received later"]}
          >
            {conflicts.rows.map((c) => (
              <tr key={`${c.workstation}/${c.seq}/${c.received_at}`}>
                <td>{c.workstation}</td>
                <td class="num">{c.seq}</td>
                <td>{kindWords(c.stored.kind)}</td>
                <td>{kindWords(c.received.kind)}</td>
              </tr>
            ))}
          </Table>
        )}
        {conflicts.more}
      </Section>

      <Section title="Escalations">
        <p class="hint">A guard lost or killed, an impostor, and the sessions ended because of it.</p>
        <Problem text={escalations.problem} />
        <Table caption="Escalations: guard lost and logoffs" columns={["Time", "Workstation", "What", "User"]}>
          {escalations.rows.map((e) => (
            <tr key={e.id}>
              <td>
                <Time at={e.time} zone={zone} />
              </td>
              <td>
                <a href={href("events", { workstation: e.workstation })}>{e.workstation}</a>
              </td>
              <td>{kindWords(e.kind)}</td>
              <td>{e.user ?? "—"}</td>
            </tr>
          ))}
        </Table>
        {escalations.rows.length === 0 && <p>No escalation.</p>}
        {escalations.more}
      </Section>
    </>
  );
}

function reasonOf(details: unknown): string {
  if (details && typeof details === "object" && "reason" in details) {
    const reason = (details as { reason: unknown }).reason;
    return typeof reason === "string" ? reason : JSON.stringify(reason);
  }
  return "—";
}

function EmergencyRow({ access, zone, reviewed }: { access: EmergencyOut; zone: string; reviewed: () => void }) {
  const [open, setOpen] = useState(false);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const submit = async (e: Event) => {
    e.preventDefault();
    const note = String(new FormData(e.currentTarget as HTMLFormElement).get("note") ?? "").trim();
    const { error } = await api.POST("/api/v1/reports/emergency/{workstation}/{seq}/review", {
      params: { path: { workstation: access.workstation, seq: access.seq } },
      body: { note },
    });
    if (error) {
      setProblem(errorText(error, "the review was not kept"));
      return;
    }
    setOpen(false);
    reviewed();
  };
  const noteId = `note-${access.id}`;
  return (
    <tr>
      <td>
        <Time at={access.time} zone={zone} />
      </td>
      <td>
        <a href={href("events", { workstation: access.workstation })}>{access.workstation}</a>
      </td>
      <td>{access.user ?? "—"}</td>
      <td class="pre">{reasonOf(access.details)}</td>
      <td>
        {access.review ? (
          <div class="review">
            <span class="badge state-active">Reviewed</span> by {access.review.reviewer},{" "}
            <Time at={access.review.reviewed} zone={zone} />
            <p class="pre">{access.review.note}</p>
          </div>
        ) : open ? (
          <form onSubmit={(e) => void submit(e)} class="inline">
            <label for={noteId}>Review note</label>
            <textarea id={noteId} name="note" required maxLength={2000} rows={2} />
            <Problem text={problem} />
            <button type="submit">Mark reviewed</button>
            <button type="button" onClick={() => setOpen(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <button
            type="button"
            onClick={() => setOpen(true)}
            aria-label={`Review the emergency access at ${access.workstation} #${access.seq}`}
          >
            Review…
          </button>
        )}
      </td>
    </tr>
  );
}
