import { describe, expect, it } from 'vitest';
import { oneAtATime, unlimited, type Limiter } from '../../src/oci/limiter.js';
import { concurrencyLimit } from '../../src/transfer/limiter.js';

/** Run `count` tasks under `limit`, each waiting a tick; the most that ran at once, and the order they started. */
async function measure(limit: Limiter, count: number, failAt?: number): Promise<{ most: number; started: number[]; results: PromiseSettledResult<number>[] }> {
  let running = 0;
  let most = 0;
  const started: number[] = [];
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, i) =>
      limit(async () => {
        started.push(i);
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setTimeout(resolve, 5));
        running--;
        if (i === failAt) throw new Error(`task ${i} failed`);
        return i;
      }),
    ),
  );
  return { most, started, results };
}

describe('limiters', () => {
  it('concurrencyLimit(n) runs at most n tasks at once, every task to its end', async () => {
    const { most, results } = await measure(concurrencyLimit(2), 7);
    expect(most).toBe(2);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : -1))).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('concurrencyLimit refuses a count below one, naming the flag', () => {
    expect(() => concurrencyLimit(0, '--jobs')).toThrow(/invalid --jobs 0/);
    expect(() => concurrencyLimit(1.5)).toThrow(/invalid job count 1.5/);
  });

  it('oneAtATime runs tasks in order; a failure reaches its caller and the next task still runs', async () => {
    const { most, started, results } = await measure(oneAtATime(), 4, 1);
    expect(most).toBe(1);
    expect(started).toEqual([0, 1, 2, 3]);
    expect(results[1]).toMatchObject({ status: 'rejected', reason: new Error('task 1 failed') });
    expect(results[3]).toEqual({ status: 'fulfilled', value: 3 });
  });

  it('unlimited runs everything at once', async () => {
    expect((await measure(unlimited, 5)).most).toBe(5);
  });
});
