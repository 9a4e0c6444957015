/**
 * A concurrency limit: runs `task` when a slot is free and holds the slot until the task settles.
 * Declared here beside the destination interface so that locations can take one without naming
 * the engine: the one implementation is transfer/'s (concurrencyLimit), handed in by the caller.
 */
export type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

/** No limit: every task runs at once (a location used alone, e.g. by a test or a single read). */
export const unlimited: Limiter = (task) => task();

/** One task at a time, in the order given: a location's default when its caller gives no limit. */
export function oneAtATime(): Limiter {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task);
    // The next task waits for this one to settle; this one's failure reaches its own caller via `run`.
    tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
}
