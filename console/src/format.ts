// Times in the collector's configured time zone, with UTC in the title (on hover).

/** A time as tables show it: the year only when it is not this year's. */
export function formatTime(ms: number | null | undefined, timeZone: string, now: number = Date.now()): string {
  if (ms === null || ms === undefined) return "—";
  const date = new Date(ms);
  try {
    const year = (t: number) => new Intl.DateTimeFormat("en-GB", { timeZone, year: "numeric" }).format(new Date(t));
    return new Intl.DateTimeFormat("en-GB", {
      timeZone,
      ...(year(ms) === year(now) ? {} : { year: "numeric" }),
      month: "short",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    }).format(date);
  } catch {
    return utc(ms);
  }
}

/** A day as the charts label it ("05 Dec"; the year when it is not this year's). */
export function formatDay(ms: number, timeZone: string, now: number = Date.now()): string {
  const year = (t: number) => new Intl.DateTimeFormat("en-GB", { timeZone, year: "numeric" }).format(new Date(t));
  return new Intl.DateTimeFormat("en-GB", {
    timeZone,
    day: "2-digit",
    month: "short",
    ...(year(ms) === year(now) ? {} : { year: "numeric" }),
  }).format(new Date(ms));
}

export function utc(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

/** "3 min ago", "2 h ago": how long since `ms`. */
export function ago(ms: number | null | undefined, now: number): string {
  if (ms === null || ms === undefined) return "never";
  const seconds = Math.max(0, Math.round((now - ms) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 120) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

/** The hour of day (0–23) of `ms` in `timeZone`. */
export function hourIn(ms: number, timeZone: string): number {
  const text = new Intl.DateTimeFormat("en-GB", { timeZone, hour: "2-digit", hour12: false }).format(new Date(ms));
  return Number(text) % 24;
}

/** An RFC 3339 time from a `datetime-local` input's value, read in `timeZone`. */
export function localInputToRfc3339(value: string, timeZone: string): string | undefined {
  if (!value) return undefined;
  const asUtc = Date.parse(`${value}:00Z`);
  if (Number.isNaN(asUtc)) return undefined;
  // The zone's offset at that moment, found by formatting it there and comparing.
  const shown = Date.parse(
    new Intl.DateTimeFormat("sv-SE", {
      timeZone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    })
      .format(new Date(asUtc))
      .replace(" ", "T") + "Z",
  );
  return new Date(asUtc - (shown - asUtc)).toISOString();
}

/** Human words for an audit kind (`unlock_failed` → "unlock failed"). */
export function kindWords(kind: string): string {
  return kind.replaceAll("_", " ");
}
