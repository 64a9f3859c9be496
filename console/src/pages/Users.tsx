import QRCode from "qrcode";
import { useEffect, useState } from "preact/hooks";
import { api, errorText, nextCursor, type Schemas, type Session } from "../api";
import { Problem, Table, Time } from "../components";

/** An otpauth:// enrolment, shown once: a QR code for the app and the URI for typing. */
function Enrolment({ user, uri, done }: { user: string; uri: string; done: () => void }) {
  const [image, setImage] = useState<string | undefined>(undefined);
  useEffect(() => {
    void QRCode.toDataURL(uri, { margin: 2, width: 220 }).then(setImage);
  }, [uri]);
  return (
    <div class="enrolment" role="dialog" aria-labelledby="enrolment-title">
      <h2 id="enrolment-title">Authenticator enrolment for {user}</h2>
      <p>
        Scan this with the clinician's authenticator app now. It is shown once and is a secret: do not screenshot or
        print it.
      </p>
      {image && <img src={image} alt={`QR code of the TOTP enrolment for ${user}`} width={220} height={220} />}
      <details>
        <summary>The enrolment as text</summary>
        <code class="uri">{uri}</code>
      </details>
      <button type="button" onClick={done}>
        Done, it is scanned
      </button>
    </div>
  );
}

export function Users({ session }: { session: Session }) {
  const admin = session.role === "admin";
  const [users, setUsers] = useState<Schemas["UserOut"][]>([]);
  const [next, setNext] = useState<string | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [notice, setNotice] = useState<string | undefined>(undefined);
  const [enrolment, setEnrolment] = useState<{ user: string; uri: string } | undefined>(undefined);
  const [editing, setEditing] = useState<string | undefined>(undefined);

  const load = async (after?: string) => {
    const { data, error, response } = await api.GET("/api/v1/admin/users", {
      params: { query: { limit: 500, ...(after ? { after } : {}) } },
    });
    if (!data) {
      setProblem(errorText(error, "the directory could not be read"));
      return;
    }
    setProblem(undefined);
    setUsers((old) => (after ? [...old, ...data] : data));
    setNext(nextCursor(response));
  };
  useEffect(() => {
    void load();
  }, []);

  const groupsOf = (text: string) =>
    text
      .split(/[,\s]+/)
      .map((g) => g.trim())
      .filter(Boolean);

  const add = async (e: Event) => {
    e.preventDefault();
    const formElement = e.currentTarget as HTMLFormElement;
    const form = new FormData(formElement);
    const id = String(form.get("id") ?? "").trim();
    const pin = String(form.get("pin") ?? "").trim();
    const { data, error } = await api.POST("/api/v1/admin/users", {
      body: {
        id,
        display_name: String(form.get("display_name") ?? "").trim(),
        role: String(form.get("role") ?? "").trim(),
        groups: groupsOf(String(form.get("groups") ?? "")),
        totp: form.get("totp") === "on",
        ...(pin ? { pin } : {}),
      },
    });
    if (!data) {
      setProblem(errorText(error, "the user was not added"));
      return;
    }
    formElement.reset();
    setNotice(`${id} added.`);
    if (data.otpauth_uri) setEnrolment({ user: id, uri: data.otpauth_uri });
    void load();
  };

  const disable = async (id: string) => {
    if (!window.confirm(`Disable ${id}? Workstations refuse them from their next sync.`)) return;
    const { error } = await api.POST("/api/v1/admin/users/{id}/disable", { params: { path: { id } } });
    setNotice(
      error
        ? undefined
        : `${id} disabled. Online workstations refuse them within a sync interval (one minute by default).`,
    );
    setProblem(error ? errorText(error, "the user was not disabled") : undefined);
    void load();
  };

  const reissue = async (id: string) => {
    const { data, error } = await api.POST("/api/v1/admin/users/{id}/totp", { params: { path: { id } } });
    if (!data?.otpauth_uri) {
      setProblem(errorText(error, "no new enrolment was issued"));
      return;
    }
    setEnrolment({ user: id, uri: data.otpauth_uri });
  };

  const save = async (e: Event, id: string) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget as HTMLFormElement);
    const { error } = await api.PUT("/api/v1/admin/users/{id}", {
      params: { path: { id } },
      body: {
        display_name: String(form.get("display_name") ?? "").trim(),
        role: String(form.get("role") ?? "").trim(),
        groups: groupsOf(String(form.get("groups") ?? "")),
      },
    });
    setProblem(error ? errorText(error, "the change was not saved") : undefined);
    if (!error) {
      setEditing(undefined);
      setNotice(`${id} changed.`);
      void load();
    }
  };

  return (
    <>
      <h1>Users</h1>
      <p class="hint">
        The clinicians in the central directory. A workstation takes a change at its next sync with the collector (every
        minute by default): a disabled user is refused from then on, also at a workstation that later goes offline. A
        workstation that is offline when the change is made refuses them once it syncs again.
      </p>
      {!admin && <p class="notice">You are signed in as an auditor: you can read the directory, not change it.</p>}
      <Problem text={problem} />
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      {enrolment && <Enrolment user={enrolment.user} uri={enrolment.uri} done={() => setEnrolment(undefined)} />}
      {admin && (
        <form class="filters add-user" onSubmit={(e) => void add(e)} aria-labelledby="add-user-heading">
          <h2 id="add-user-heading">Add a user</h2>
          <div>
            <label for="u-id">User ID</label>
            <input
              id="u-id"
              name="id"
              required
              pattern="[A-Za-z0-9._@\-]{1,64}"
              spellcheck={false}
              autocomplete="off"
            />
          </div>
          <div>
            <label for="u-name">Display name</label>
            <input id="u-name" name="display_name" required maxLength={128} autocomplete="off" />
          </div>
          <div>
            <label for="u-role">Role</label>
            <input id="u-role" name="role" required maxLength={128} placeholder="nurse" />
          </div>
          <div>
            <label for="u-groups">Groups (none: every group)</label>
            <input id="u-groups" name="groups" placeholder="ward4, icu" spellcheck={false} />
          </div>
          <div>
            <label for="u-pin">First PIN (optional)</label>
            <input
              id="u-pin"
              name="pin"
              type="password"
              inputMode="numeric"
              pattern="[0-9]{6,12}"
              autocomplete="new-password"
            />
          </div>
          <div class="check">
            <input id="u-totp" name="totp" type="checkbox" defaultChecked />
            <label for="u-totp">Enrol an authenticator app (TOTP)</label>
          </div>
          <div class="actions">
            <button type="submit">Add user</button>
          </div>
        </form>
      )}
      <Table
        caption="Directory users"
        columns={["User ID", "Name", "Role", "Groups", "Credentials", "Status", "Changed", admin && "Actions"]}
      >
        {users.map((u) =>
          editing === u.id ? (
            <tr key={u.id}>
              <th scope="row">{u.id}</th>
              <td colSpan={admin ? 7 : 6}>
                <form class="inline" onSubmit={(e) => void save(e, u.id)}>
                  <label for={`e-name-${u.id}`}>Display name</label>
                  <input id={`e-name-${u.id}`} name="display_name" defaultValue={u.display_name} required />
                  <label for={`e-role-${u.id}`}>Role</label>
                  <input id={`e-role-${u.id}`} name="role" defaultValue={u.role} required />
                  <label for={`e-groups-${u.id}`}>Groups</label>
                  <input id={`e-groups-${u.id}`} name="groups" defaultValue={u.groups.join(", ")} />
                  <button type="submit">Save</button>
                  <button type="button" onClick={() => setEditing(undefined)}>
                    Cancel
                  </button>
                </form>
              </td>
            </tr>
          ) : (
            <tr key={u.id} class={u.disabled ? "disabled" : undefined}>
              <th scope="row">{u.id}</th>
              <td>{u.display_name}</td>
              <td>{u.role}</td>
              <td>{u.groups.length ? u.groups.join(", ") : "every group"}</td>
              <td>{[u.has_pin && "PIN", u.has_totp && "TOTP"].filter(Boolean).join(" + ") || "none"}</td>
              <td>{u.disabled ? <span class="badge state-guard_lost">Disabled</span> : "Enabled"}</td>
              <td>
                <Time at={u.updated} zone={session.time_zone} />
              </td>
              {admin && (
                <td class="actions">
                  {!u.disabled && (
                    <>
                      <button type="button" onClick={() => setEditing(u.id)} aria-label={`Edit ${u.id}`}>
                        Edit
                      </button>
                      <button
                        type="button"
                        onClick={() => void reissue(u.id)}
                        aria-label={`Issue a new authenticator enrolment for ${u.id}`}
                      >
                        New code
                      </button>
                      <button
                        type="button"
                        class="danger"
                        onClick={() => void disable(u.id)}
                        aria-label={`Disable ${u.id}`}
                      >
                        Disable
                      </button>
                    </>
                  )}
                </td>
              )}
            </tr>
          ),
        )}
      </Table>
      {next && (
        <button type="button" onClick={() => void load(next)}>
          Show more users
        </button>
      )}
    </>
  );
}
