import type { ComponentChildren } from "preact";
import { formatTime, utc } from "./format";

/** A time in the collector's zone; UTC on hover and for screen readers' `datetime`. */
export function Time({ at, zone }: { at: string | null | undefined; zone: string }) {
  if (!at) return <span>—</span>;
  const ms = Date.parse(at);
  return (
    <time dateTime={utc(ms)} title={`${utc(ms)} (UTC)`}>
      {formatTime(ms, zone)}
    </time>
  );
}

const STATE_WORDS: Record<string, string> = {
  active: "Active",
  warning: "Warning",
  locked: "Locked",
  guard_lost: "Guard lost",
  logged_off: "Logged off",
  silent: "Silent",
};

/** A state as a word and a colour: never the colour alone. */
export function StateBadge({ state }: { state: string | null | undefined }) {
  const key = state ?? "unknown";
  return <span class={`badge state-${key}`}>{STATE_WORDS[key] ?? "Unknown"}</span>;
}

export function Problem({ text }: { text: string | undefined }) {
  if (!text) return null;
  return (
    <p class="error" role="alert">
      {text}
    </p>
  );
}

export function Section({ title, children, id }: { title: string; children: ComponentChildren; id?: string }) {
  const headingId = `${id ?? title.toLowerCase().replace(/\W+/g, "-")}-heading`;
  return (
    <section aria-labelledby={headingId}>
      <h2 id={headingId}>{title}</h2>
      {children}
    </section>
  );
}

/** A table that scrolls sideways on a narrow screen, named for screen readers: its
 * column headers, then its rows. */
export function Table({
  caption,
  columns,
  children,
}: {
  caption: string;
  columns: (string | false)[];
  children: ComponentChildren;
}) {
  return (
    <div class="table-wrap" role="region" aria-label={caption} tabIndex={0}>
      <table>
        <caption class="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            {columns
              .filter((c): c is string => c !== false)
              .map((c) => (
                <th scope="col" key={c}>
                  {c}
                </th>
              ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
