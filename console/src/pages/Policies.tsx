import { diffLines } from "diff";
import { useEffect, useState } from "preact/hooks";
import { api, errorText, type Schemas, type Session } from "../api";
import { Problem, Section, Table, Time } from "../components";

type InForce = Schemas["PolicyInForce"];

function seconds(s: number): string {
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

function Timeouts({ t }: { t: Schemas["EffectiveTimeouts"] | null | undefined }) {
  if (!t) return <p class="error">This policy does not read as valid: workstations refuse it and keep theirs.</p>;
  return (
    <Table caption="Effective timeouts per PHI tier" columns={["While open", "Idle timeout", "Warning"]}>
      <tr>
        <th scope="row">No PHI application (the group's)</th>
        <td>{seconds(t.idle_timeout_secs)}</td>
        <td>{seconds(t.warning_secs)}</td>
      </tr>
      {t.tiers.map((tier) => (
        <tr key={tier.tier}>
          <th scope="row">PHI tier {tier.tier}</th>
          <td>{seconds(tier.idle_timeout_secs)}</td>
          <td>{seconds(tier.warning_secs)}</td>
        </tr>
      ))}
    </Table>
  );
}

/** The lines that changed from the previous policy: removed and added, as text. */
function Diff({ before, after }: { before: string; after: string }) {
  const parts = diffLines(before, after);
  return (
    <pre class="diff" aria-label="Changes from the previous policy">
      {parts.map((p, i) => (
        <span key={i} class={p.added ? "added" : p.removed ? "removed" : undefined}>
          {p.value
            .replace(/\n$/, "")
            .split("\n")
            .map((line) => `${p.added ? "+ " : p.removed ? "- " : "  "}${line}\n`)
            .join("")}
        </span>
      ))}
    </pre>
  );
}

function Draft({ group, start, drafted }: { group: string; start: string; drafted: () => void }) {
  const [text, setText] = useState(start);
  const [check, setCheck] = useState<Schemas["PolicyCheck"] | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [saved, setSaved] = useState<Schemas["PolicyDraft"] | undefined>(undefined);

  useEffect(() => {
    // Checked by core's validation as they type (a short pause first).
    const timer = window.setTimeout(() => {
      void api.POST("/api/v1/policies/check", { body: { policy: text } }).then(({ data }) => setCheck(data));
    }, 300);
    return () => window.clearTimeout(timer);
  }, [text]);

  const save = async (e: Event) => {
    e.preventDefault();
    const { data, error } = await api.POST("/api/v1/admin/policy-drafts", { body: { group, policy: text } });
    if (!data) {
      setProblem(errorText(error, "the draft was not kept"));
      return;
    }
    setProblem(undefined);
    setSaved(data);
    drafted();
  };

  const id = `draft-${group}`;
  return (
    <form class="draft" onSubmit={(e) => void save(e)}>
      <label for={id}>Draft a change for {group}</label>
      <textarea
        id={id}
        rows={12}
        value={text}
        spellcheck={false}
        onInput={(e) => setText((e.currentTarget as HTMLTextAreaElement).value)}
        aria-describedby={`${id}-check`}
      />
      <div id={`${id}-check`} role="status" aria-live="polite">
        {check?.valid && <p class="ok">Valid: a workstation would take it.</p>}
        {check && !check.valid && (
          <ul class="problems">
            {check.problems.map((p, i) => (
              <li key={i}>
                {p.line ? `line ${p.line}: ` : ""}
                {p.field ? <code>{p.field}</code> : null} {p.message}
              </li>
            ))}
          </ul>
        )}
      </div>
      {check?.timeouts && <Timeouts t={check.timeouts} />}
      <Problem text={problem} />
      <button type="submit" disabled={!check?.valid}>
        Keep this draft
      </button>
      {saved && (
        <p class="notice" role="status">
          Draft {saved.id} kept. IT signs it with its offline key:{" "}
          <code>
            wardlockctl --server {location.origin} --token TOKEN policy sign --draft {saved.id} --key policy-signing.key
          </code>
        </p>
      )}
    </form>
  );
}

export function Policies({ session }: { session: Session }) {
  const [policies, setPolicies] = useState<InForce[]>([]);
  const [drafts, setDrafts] = useState<Schemas["PolicyDraft"][]>([]);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [drafting, setDrafting] = useState<string | undefined>(undefined);
  const [newGroup, setNewGroup] = useState("");

  const load = async () => {
    const [{ data, error }, d] = await Promise.all([
      api.GET("/api/v1/policies"),
      api.GET("/api/v1/policy-drafts", { params: { query: { limit: 50 } } }),
    ]);
    setProblem(data ? undefined : errorText(error, "the policies could not be read"));
    setPolicies(data ?? []);
    setDrafts(d.data ?? []);
  };
  useEffect(() => {
    void load();
  }, []);

  const admin = session.role === "admin";
  return (
    <>
      <h1>Policies</h1>
      <p class="hint">
        Each group's signed policy in force. The collector stores and serves them; every workstation checks the
        signature against the keys it trusts, and refuses an older serial. The signing key never lives on the collector.
      </p>
      <Problem text={problem} />
      {policies.length === 0 && !problem && (
        <p>No central policy has been stored yet: workstations run their machine policy.</p>
      )}
      {policies.map((p) => (
        <Section key={p.group} title={`Group ${p.group}`} id={`policy-${p.group}`}>
          <dl class="facts">
            <div>
              <dt>Serial in force</dt>
              <dd>{p.serial}</dd>
            </div>
            <div>
              <dt>Signing key</dt>
              <dd>
                <code>{p.key_id || "—"}</code>
              </dd>
            </div>
            <div>
              <dt>Stored by</dt>
              <dd>{p.stored_by || "unknown (stored before this was kept)"}</dd>
            </div>
            <div>
              <dt>Stored</dt>
              <dd>
                <Time at={p.stored} zone={session.time_zone} />
              </dd>
            </div>
          </dl>
          <h3>Effective timeouts</h3>
          <Timeouts t={p.timeouts} />
          <h3>{p.previous ? `Changes from serial ${p.previous.serial}` : "The policy (the group's first)"}</h3>
          <Diff before={p.previous?.policy ?? ""} after={p.policy} />
          {admin &&
            (drafting === p.group ? (
              <Draft group={p.group} start={p.policy} drafted={() => void load()} />
            ) : (
              <button type="button" onClick={() => setDrafting(p.group)}>
                Draft a change for {p.group}
              </button>
            ))}
        </Section>
      ))}
      {admin && (
        <Section title="A policy for another group">
          <label for="new-group">Group</label>
          <input
            id="new-group"
            value={newGroup}
            onInput={(e) => setNewGroup((e.currentTarget as HTMLInputElement).value.trim())}
          />
          {newGroup && (
            <Draft
              group={newGroup}
              start={'[lock]\nidle_timeout = "5m"\nwarning = "30s"\n'}
              drafted={() => void load()}
            />
          )}
        </Section>
      )}
      <Section title="Drafts waiting for a signature">
        {drafts.length === 0 ? (
          <p>No draft.</p>
        ) : (
          <Table caption="Policy drafts, newest first" columns={["Draft", "Group", "By", "When", "Sign with"]}>
            {drafts.map((d) => (
              <tr key={d.id}>
                <td class="num">{d.id}</td>
                <td>{d.group}</td>
                <td>{d.author}</td>
                <td>
                  <Time at={d.created} zone={session.time_zone} />
                </td>
                <td>
                  <code>wardlockctl policy sign --draft {d.id} --key …</code>
                </td>
              </tr>
            ))}
          </Table>
        )}
      </Section>
    </>
  );
}
