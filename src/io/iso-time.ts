/**
 * Date#toISOString's text, made from the UTC fields. V8's toISOString sets up ICU's host time
 * zone on its first call (tzset, /etc/localtime, the zone's data: ~1 ms of a container start)
 * although the text is UTC.
 */
export function isoTime(date: Date = new Date()): string {
  const year = date.getUTCFullYear();
  // Outside 0..9999 (or an invalid date, which throws there) toISOString's own form applies.
  if (!(year >= 0 && year <= 9999)) return date.toISOString();
  const two = (n: number): string => (n < 10 ? `0${n}` : String(n));
  const ms = date.getUTCMilliseconds();
  return `${String(year).padStart(4, '0')}-${two(date.getUTCMonth() + 1)}-${two(date.getUTCDate())}T${two(date.getUTCHours())}:${two(date.getUTCMinutes())}:${two(date.getUTCSeconds())}.${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
}
