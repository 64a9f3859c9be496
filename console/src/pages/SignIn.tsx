import { useState } from "preact/hooks";
import { api, errorText, type Session } from "../api";

/** Name, password and the authenticator's code; the fields carry the standard autocomplete
 * tokens, so password managers fill them. */
export function SignIn({ ended, onSignedIn }: { ended: boolean; onSignedIn: (s: Session) => void }) {
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(undefined);
    const {
      data,
      error: failed,
      response,
    } = await api.POST("/api/v1/console/session", {
      body: {
        name: String(form.get("name") ?? "").trim(),
        password: String(form.get("password") ?? ""),
        code: String(form.get("code") ?? "").replace(/\s/g, ""),
      },
    });
    setBusy(false);
    if (data) {
      onSignedIn(data);
      return;
    }
    const wait = response.headers.get("retry-after");
    const text = errorText(failed, `sign-in failed (${response.status})`);
    setError(wait ? `${text} (try again in ${wait} s)` : text);
  };

  return (
    <main id="main" class="signin">
      <h1>Wardlock console</h1>
      {ended && (
        <p class="notice">
          Your session ended (15 minutes without use, 12 hours at most, or signed out). Sign in again.
        </p>
      )}
      <form onSubmit={(e) => void submit(e)} aria-describedby={error ? "signin-error" : undefined}>
        <label for="name">Name</label>
        <input id="name" name="name" autocomplete="username" required autofocus spellcheck={false} />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required />
        <label for="code">Code from your authenticator app</label>
        <input id="code" name="code" autocomplete="one-time-code" inputMode="numeric" pattern="[0-9 ]{6,10}" required />
        {error && (
          <p id="signin-error" class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
      <p class="hint">
        An account is made on the collector: <code>wardlock-collector account create NAME --role admin|auditor</code>.
      </p>
    </main>
  );
}
