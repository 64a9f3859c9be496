import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, type Session, useSession } from "./api";
import { route, type Route, useRoute } from "./route";
import { Charts } from "./pages/Charts";
import { Events } from "./pages/Events";
import { Fleet } from "./pages/Fleet";
import { Policies } from "./pages/Policies";
import { Reports } from "./pages/Reports";
import { SignIn } from "./pages/SignIn";
import { Users } from "./pages/Users";
import "./style.css";

const PAGES: { route: Route; label: string; adminOnly?: boolean }[] = [
  { route: "fleet", label: "Fleet" },
  { route: "events", label: "Events" },
  { route: "reports", label: "Reports" },
  { route: "charts", label: "Charts" },
  { route: "users", label: "Users" },
  { route: "policies", label: "Policies" },
];

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [ended, setEnded] = useState(false);
  const current = useRoute();

  useSession(session ?? undefined, () => {
    setSession(null);
    setEnded(true);
  });

  useEffect(() => {
    void api.GET("/api/v1/console/session").then(({ data }) => setSession(data ?? null));
  }, []);

  useEffect(() => {
    const page = PAGES.find((p) => p.route === current.page);
    document.title = `${page?.label ?? "Sign in"} · Wardlock console`;
  }, [current.page]);

  if (session === undefined) {
    return <p class="loading">Loading…</p>;
  }
  if (session === null) {
    return (
      <SignIn
        ended={ended}
        onSignedIn={(s) => {
          setEnded(false);
          setSession(s);
        }}
      />
    );
  }

  const signOut = async () => {
    await api.DELETE("/api/v1/console/session");
    setSession(null);
    setEnded(false);
  };

  return (
    <>
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Wardlock console</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((p) => (
              <li key={p.route}>
                <a href={`#/${p.route}`} aria-current={current.page === p.route ? "page" : undefined}>
                  {p.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span>
            {session.name} <span class="role">({session.role})</span>
          </span>
          <span class="zone" title="Times on these pages are in this time zone; hover a time for UTC">
            {session.time_zone}
          </span>
          <button type="button" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page route={current.page} params={current.params} session={session} />
      </main>
    </>
  );
}

function Page({ route: page, params, session }: { route: Route; params: URLSearchParams; session: Session }) {
  switch (page) {
    case "events":
      return <Events session={session} params={params} />;
    case "reports":
      return <Reports session={session} />;
    case "charts":
      return <Charts session={session} />;
    case "users":
      return <Users session={session} />;
    case "policies":
      return <Policies session={session} />;
    case "fleet":
      return <Fleet session={session} params={params} />;
  }
}

if (!location.hash) {
  route("fleet");
}
const root = document.getElementById("app");
if (root) {
  render(<App />, root);
}
